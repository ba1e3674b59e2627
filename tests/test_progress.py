"""Live progress (lmcore/progress.py): plain lines when the output is not a terminal (DVC logs), with done/total,
the right ETA (also after a resume) and no bar redraws; a tqdm bar on a terminal; the training console and the
evaluation loops use it."""

from __future__ import annotations

import io

from lmcore.progress import Progress
from lmcore.train.tracking import ConsoleTracker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_carry_done_total_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    p = Progress(100, "train ar-stories-tiny-v1", "step", stream=out, min_interval=0.0, tty=False, clock=clock)
    clock.now = 10.0
    p.update(25, loss=3.21, **{"tokens/s": 12345.0})
    clock.now = 20.0
    p.update(50, loss=2.5)
    lines = out.getvalue().splitlines()
    assert lines == [
        "train ar-stories-tiny-v1: step 25/100 (25%), elapsed 00:10, ETA 00:30, loss=3.21, tokens/s=1.234e+04",
        "train ar-stories-tiny-v1: step 50/100 (50%), elapsed 00:20, ETA 00:20, loss=2.5, tokens/s=1.234e+04",
    ]
    assert "\r" not in out.getvalue()


def test_eta_of_a_resumed_run_counts_only_this_process_steps():
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, "train", "step", initial=600, stream=out, min_interval=0.0, tty=False, clock=clock)
    clock.now = 100.0
    p.update(700)  # 100 steps in 100 s: 300 steps left take 300 s, not the 43 s that 700 steps / 100 s would say
    assert out.getvalue() == "train: step 700/1000 (70%), elapsed 01:40, ETA 05:00\n"


def test_lines_are_rate_limited_but_the_last_one_always_shows():
    out, clock = io.StringIO(), Clock()
    p = Progress(40, "evaluate sdd: samples", "sample", stream=out, min_interval=10.0, tty=False, clock=clock)
    for t, done in ((1, 8), (5, 16), (11, 24), (15, 32), (16, 40)):
        clock.now = float(t)
        p.update(done)
    shown = [line.split(": sample ")[1].split(" ")[0] for line in out.getvalue().splitlines()]
    assert shown == ["8/40", "24/40", "40/40"]  # t=1 (first), t=11 (10 s later), the end


def test_a_terminal_gets_a_tqdm_bar():
    out = io.StringIO()
    with Progress(10, "respond", "sample", stream=out, tty=True) as p:
        p.update(4, loss=1.0)
    text = out.getvalue()
    assert "\r" in text and "4/10" in text and "loss=1" in text and "respond" in text


def test_training_console_shows_progress_and_validation_lines():
    out = io.StringIO()
    console = ConsoleTracker(40, 0, "sdd-stories-tiny-v1", stream=out, tty=False)
    console.log({"train/loss": 4.5, "train/lr": 0.001, "train/tokens_per_sec": 900.0, "train/grad_norm": 1.0}, 10)
    console.log({"val/loss": 4.25, "val/accuracy": 0.125}, 10)
    console.log_samples(["Once upon a time"], 10)
    console.close()
    first, second, third = out.getvalue().splitlines()
    assert first.startswith("sdd-stories-tiny-v1: step 10/40 (25%), elapsed ")
    assert ", ETA " in first and first.endswith("loss=4.5, tokens/s=900, lr=0.001")
    assert second == "step     10/40  val/loss=4.25  val/accuracy=0.125"
    assert third == "  sample 0 @ 10: 'Once upon a time'"
