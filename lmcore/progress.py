"""Live progress of long work (training, fine-tuning, evaluation sampling): done/total, rate and ETA.

On a terminal it is a tqdm bar. When the stream is not a terminal (a DVC stage's log, `dvc queue logs`, a file)
a redrawn bar would leave carriage-return garbage, so it prints one plain line per update instead, at most one
every `min_interval` seconds (plus the last), formatted by tqdm's own `format_meter` so both show the same numbers:

    train ar-stories-tiny-v1: step 120/400 (30%), elapsed 00:42, ETA 01:38, loss=3.214, tokens/s=1.23e+04

The ETA is (total − done) / rate, the rate counted from where this process started (`initial`), so a resumed
run does not count the steps an earlier process did as done in no time.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

LINE_FORMAT = "{desc}: {unit} {n_fmt}/{total_fmt} ({percentage:.0f}%), elapsed {elapsed}, ETA {remaining}{postfix}"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"


def is_terminal(stream: IO[str]) -> bool:
    """Whether `stream` is an interactive terminal (a bar can be redrawn in place)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def terminal_columns(stream: IO[str]) -> int:
    """The terminal's width (0 when unknown: a pseudo-terminal without a window size, e.g. `script` or some
    `docker exec -t`, where tqdm would take the 0 rows for no room and draw nothing)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def format_postfix(values: dict[str, Any]) -> str:
    """`loss=3.214, tokens/s=1.23e+04`: numbers to 4 significant digits, in the given order; None is left out."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items() if v is not None)


class Progress:
    """Progress of `total` units of work (`unit`: "step", "sample") from `initial` on; `update(done, **postfix)`
    moves it to `done` units. `tty=None` asks the stream; `clock` is injectable for tests."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        initial: int = 0,
        stream: IO[str] | None = None,
        min_interval: float = 10.0,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.initial, self.done = int(total), desc, unit, int(initial), int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval, self.clock = min_interval, clock
        self.start, self.last_line = clock(), None
        self.postfix: dict[str, Any] = {}
        self.bar: tqdm | None = None
        if is_terminal(self.stream) if tty is None else tty:
            width = terminal_columns(self.stream)
            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                dynamic_ncols=width > 0,  # follows resizes; without a known size, a fixed one
                ncols=None if width > 0 else 100,
                nrows=None if width > 0 else 24,
                bar_format=BAR_FORMAT,
            )

    def update(self, done: int, **postfix: Any) -> None:
        """Move to `done` units (absolute) and show `postfix` (e.g. loss=…, tokens/s=…) beside the count."""
        self.postfix.update(postfix)
        step, self.done = int(done) - self.done, int(done)
        if self.bar is not None:
            self.bar.set_postfix_str(format_postfix(self.postfix), refresh=False)
            self.bar.update(step)
            return
        now = self.clock()
        if self.last_line is None or now - self.last_line >= self.min_interval or self.done >= self.total:
            self.last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The plain progress line at time `now` (default: the clock's)."""
        elapsed = (self.clock() if now is None else now) - self.start
        return tqdm.format_meter(
            self.done,
            self.total,
            elapsed,
            prefix=self.desc,
            unit=self.unit,
            initial=self.initial,
            bar_format=LINE_FORMAT,
            postfix=format_postfix(self.postfix) or None,
        )

    def write(self, text: str, stream: IO[str] | None = None) -> None:
        """Print a line of text without breaking the bar (tqdm.write clears and redraws it)."""
        tqdm.write(text, file=stream or self.stream)

    def close(self) -> None:
        """Finish the bar (a no-op for plain lines)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
