"""The one trainer: learning happens, exact resume (in process and after SIGKILL), signals, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmcore.config import TrainConfig
from lmcore.errors import CheckpointError, DataError
from lmcore.models import ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.run import Outputs, pretrain
from lmcore.train.tracking import flatten

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64}


def tiny_model() -> ModelConfig:
    return ModelConfig(**TINY)


def train_cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=12,
        batch_size=4,
        seq_len=32,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_every=4,
        eval_batches=2,
        log_every=1,
        checkpoint_every=3,
        num_samples=1,
        wandb=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def history(path: Path) -> dict[int, dict]:
    """step → metrics; later lines win (a resumed run re-logs the steps after its checkpoint)."""
    out: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "metrics" in rec:
            out.setdefault(rec["step"], {}).update(rec["metrics"])
    return out


def run(arch: str, data: Path, out: Path, cfg: TrainConfig, resume: str | None = None) -> dict:
    outputs = Outputs(out, out / "metrics.json", out / "plots")
    return pretrain(get_objective(arch), tiny_model(), cfg, data, outputs, f"{arch}-test", resume)


def test_loss_falls_and_outputs_are_written(corpus, tmp_path):
    final = run("ar", corpus, tmp_path / "a", train_cfg(max_steps=30, eval_every=10))
    h = history(tmp_path / "a" / "history.jsonl")
    assert h[30]["train/loss"] < h[1]["train/loss"] - 0.5
    assert final["val/loss"] < h[10]["val/loss"]
    ckpt = torch.load(tmp_path / "a" / "latest.pt", weights_only=False)
    assert ckpt["global_step"] == 30 and ckpt["architecture"] == "ar"
    assert (tmp_path / "a" / "best.pt").is_file()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for name in ("loss", "accuracy", "perplexity", "lr", "tokens_per_sec"):
        assert name in metrics["train"]
    for name in ("loss", "accuracy", "perplexity"):
        assert name in metrics["val"]
    facts = json.loads((tmp_path / "a" / "metrics_facts.json").read_text())  # names and kinds: not metrics
    assert facts["architecture"] == "ar" and facts["metric_kind"] == "exact"
    assert all(isinstance(v, (int, float)) for v in flatten(metrics).values())  # `dvc metrics show`: numbers only
    assert (tmp_path / "a" / "plots" / "plots" / "metrics" / "val" / "loss.tsv").is_file()


@pytest.mark.parametrize("arch", ["ar", "diffusion", "sdd"])
def test_resume_in_process_is_bitwise_exact(arch, corpus, tmp_path):
    cfg = train_cfg()
    run(arch, corpus, tmp_path / "full", cfg)
    full = history(tmp_path / "full" / "history.jsonl")
    run(arch, corpus, tmp_path / "part", train_cfg(stop_at_step=6))
    # Same schedule as the full run: only where training stops differs.
    run(arch, corpus, tmp_path / "part", cfg, resume=str(tmp_path / "part" / "latest.pt"))
    part = history(tmp_path / "part" / "history.jsonl")
    assert sorted(part) == sorted(full)
    for step in full:
        assert part[step]["train/loss"] == full[step]["train/loss"], step
    assert part[12]["val/loss"] == full[12]["val/loss"]


def test_resume_rejects_mismatches(corpus, tmp_path):
    run("ar", corpus, tmp_path / "a", train_cfg(max_steps=3))
    ckpt = str(tmp_path / "a" / "latest.pt")
    with pytest.raises(CheckpointError, match="architecture 'other' does not match --architecture ar"):
        _resume_as(corpus, tmp_path, ckpt, architecture="other")
    bigger = ModelConfig(**{**TINY, "d_model": 64})
    with pytest.raises(CheckpointError, match="model config differs .*d_model"):
        pretrain(get_objective("ar"), bigger, train_cfg(), corpus, Outputs(tmp_path / "c"), "x", ckpt)


def _resume_as(corpus: Path, tmp_path: Path, ckpt: str, architecture: str) -> None:
    data = torch.load(ckpt, weights_only=False)
    data["architecture"] = architecture
    torch.save(data, tmp_path / "other.pt")
    pretrain(
        get_objective("ar"), tiny_model(), train_cfg(), corpus, Outputs(tmp_path / "d"), "x", str(tmp_path / "other.pt")
    )


def test_tokenizer_mismatch_is_refused(corpus, other_corpus, tmp_path):
    run("ar", corpus, tmp_path / "a", train_cfg(max_steps=3))
    with pytest.raises(CheckpointError, match="tokenizer does not match"):
        run("ar", other_corpus, tmp_path / "b", train_cfg(), resume=str(tmp_path / "a" / "latest.pt"))


def test_data_dir_without_meta_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="meta.json"):
        run("ar", tmp_path / "empty", tmp_path / "out", train_cfg())


# ---------------------------------------------------------------- stage scripts in subprocesses


def stage(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), *args],
        cwd=kw.get("cwd", ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def train_args(corpus: Path, out: Path, model_file: Path, steps: int) -> list[str]:
    return [
        "--architecture",
        "ar",
        "--data_dir",
        str(corpus),
        "--model_config",
        str(model_file),
        "--max_steps",
        str(steps),
        "--batch_size",
        "8",
        "--seq_len",
        "64",
        "--log_every",
        "1",
        "--eval_every",
        "50",
        "--checkpoint_every",
        "5",
        "--device",
        "cpu",
        "--no_wandb",
        "--checkpoint_dir",
        str(out),
        "--metrics_file",
        str(out / "m.json"),
        "--plots_dir",
        str(out / "plots"),
    ]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(corpus, tmp_path, model_file):
    steps = 120
    full = stage(*train_args(corpus, tmp_path / "full", model_file, steps))
    assert full.wait(timeout=600) == 0, full.stderr.read()
    victim = stage(*train_args(corpus, tmp_path / "killed", model_file, steps))
    log = tmp_path / "killed" / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill between checkpoints: after step 12 logged (checkpoint at 10)
        if log.exists() and any(json.loads(ln)["step"] >= 12 for ln in log.read_text().splitlines() if ln):
            break
        time.sleep(0.005)
    assert victim.poll() is None, "training finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = max(json.loads(ln)["step"] for ln in log.read_text().splitlines() if ln)
    saved = torch.load(tmp_path / "killed" / "latest.pt", weights_only=False)["global_step"]
    assert saved < killed_at < steps
    resumed = stage(
        *train_args(corpus, tmp_path / "killed", model_file, steps),
        "--resume_from",
        str(tmp_path / "killed" / "latest.pt"),
    )
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a, b = history(tmp_path / "full" / "history.jsonl"), history(log)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert all(a[s]["train/loss"] == b[s]["train/loss"] for s in a)
    assert a[steps]["val/loss"] == b[steps]["val/loss"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits(corpus, tmp_path, model_file, sig):
    proc = stage(*train_args(corpus, tmp_path / "run", model_file, 100000))
    log = tmp_path / "run" / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 3):
        time.sleep(0.01)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    err = proc.stderr.read()
    assert "checkpoint at step" in err and "Traceback" not in err
    ckpt = torch.load(tmp_path / "run" / "latest.pt", weights_only=False)
    assert ckpt["global_step"] >= 3


def test_stage_reports_bad_input_in_one_line(tmp_path, corpus):
    proc = stage("--architecture", "ar", "--data_dir", str(tmp_path / "missing"), "--no_wandb")
    assert proc.wait(timeout=120) == 2
    err = proc.stderr.read().strip()
    assert err.startswith("error: ") and "meta.json" in err and len(err.splitlines()) == 1
    proc = stage("--architecture", "ar", "--data_dir", str(corpus), "--model_config", "huge", "--no_wandb")
    assert proc.wait(timeout=120) == 2
    assert "unknown size 'huge'" in proc.stderr.read()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = stage(
        "--architecture",
        "ar",
        "--data_dir",
        str(corpus),
        "--resume_from",
        str(bad),
        "--no_wandb",
        "--checkpoint_dir",
        str(tmp_path / "o"),
    )
    assert proc.wait(timeout=120) == 2
    assert "bad.pt: not a readable checkpoint" in proc.stderr.read()
