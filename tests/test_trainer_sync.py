"""A training step reads nothing back from the device: losses, metrics and the grad norm stay tensors until the log
is flushed, which reads the whole interval at once; metrics with nothing to score are left out, not counted as 0."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from lmcore.config import TrainConfig
from lmcore.models import ModelConfig
from lmcore.train.checkpoint import RunInfo
from lmcore.train.tracking import Tracker
from lmcore.train.trainer import Trainer

V = 48
READS = ("item", "tolist", "__float__", "__int__", "__bool__")


def make_trainer(arch: str, tmp_path, grad_accum_steps: int = 2, **kw) -> Trainer:
    from lmcore.objectives import get_objective

    base = {
        "max_steps": 4,
        "batch_size": 2,
        "seq_len": 12,
        "warmup_steps": 1,
        "log_every": 2,
        "eval_every": 100,
        "checkpoint_every": 100,
        "num_samples": 0,
        "wandb": False,
        "device": "cpu",
    }
    cfg = TrainConfig(**{**base, "grad_accum_steps": grad_accum_steps, **kw})
    batches = lambda step, micro: {
        "tokens": torch.randint(
            6, V, (2, 12 + (arch == "ar")), generator=torch.Generator().manual_seed(100 * step + micro)
        )
    }
    objective = get_objective(arch, {"fixed_k": 2} if arch == "sdd" else {})
    return Trainer(
        objective,
        ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=V, causal=objective.causal),
        cfg,
        batches,
        [batches(-1, 0)],
        tmp_path,
        RunInfo(arch, {}, ""),
        Tracker(),
    )


@pytest.mark.parametrize("arch", ["ar", "diffusion", "sdd"])
def test_train_step_makes_no_host_read(arch, tmp_path, monkeypatch):
    trainer = make_trainer(arch, tmp_path)
    calls: list[str] = []

    def forbid(name: str):
        def read(*args):
            raise AssertionError(f"Tensor.{name} during train_step")

        return read

    def count(name: str):
        def call(t, *args):
            calls.append(name)
            return getattr(torch._C.TensorBase, name)(t, *args)

        return call

    # CPU AdamW reads its step counter (a CPU tensor) with .item(); CUDA's fused AdamW, which the trainer uses
    # there, does not. Only the optimizer's own step runs with reads allowed.
    real_step = trainer.optimizer.step

    def optimizer_step(*args, **kwargs):
        with monkeypatch.context() as allowed:
            for name in READS:
                allowed.setattr(torch.Tensor, name, getattr(torch._C.TensorBase, name))
            return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", optimizer_step)
    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    monkeypatch.setattr(torch.Tensor, "nonzero", count("nonzero"))
    steps = []
    for _ in range(2):
        steps.append(trainer.train_step())
        trainer.step += 1
    monkeypatch.undo()
    # Diffusion gathers its masked rows for the head: one nonzero (a size read on CUDA) per micro-batch, by design.
    assert calls == (["nonzero"] * 4 if arch == "diffusion" else [])
    for metrics in steps:
        assert {"train/loss", "train/grad_norm", "train/accuracy", "train/lr"} <= set(metrics)
        for key, value in metrics.items():
            assert isinstance(value, float) if key in ("train/lr", "train/k") else value.dim() == 0, key
        assert math.isfinite(metrics["train/loss"]) and metrics["train/grad_norm"] > 0


@pytest.mark.parametrize("arch", ["ar", "sdd"])
def test_flush_reads_the_interval_once_and_means_match_the_steps(arch, tmp_path, monkeypatch):
    trainer = make_trainer(arch, tmp_path, grad_accum_steps=1)
    steps = []
    for _ in range(3):
        metrics = trainer.train_step()
        trainer.step += 1
        steps.append(metrics)
        for k, v in metrics.items():
            trainer.log_buffer.setdefault(k, []).append(v)
    reads = []
    real_tolist = torch._C.TensorBase.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or real_tolist(t))
    monkeypatch.setattr(torch.Tensor, "item", lambda t: pytest.fail("item() in _flush_log"))
    logged = trainer._flush_log(1000.0)
    monkeypatch.undo()
    assert len(reads) == 1 and trainer.log_buffer == {}
    for key in ("train/loss", "train/grad_norm", "train/accuracy", "train/lr"):
        expected = sum(float(m[key]) for m in steps) / 3
        assert logged[key] == pytest.approx(expected, rel=1e-6), key
    assert logged["train/perplexity"] == pytest.approx(math.exp(logged["train/loss"]))


def test_nan_metrics_are_left_out_of_means_and_buffers_survive_a_checkpoint(tmp_path):
    trainer = make_trainer("ar", tmp_path, grad_accum_steps=1)
    nan = torch.tensor(float("nan"))
    trainer.log_buffer = {
        "train/loss": [torch.tensor(2.0), torch.tensor(4.0)],
        "train/lr": [0.1, 0.3],
        "train/ignore_accuracy": [nan, torch.tensor(0.5)],
        "train/never": [nan, nan],
    }
    path = tmp_path / "buffer.pt"
    torch.save(trainer.state()["log_buffer"], path)  # the checkpoint's copy (torch.save, as in save())
    trainer.log_buffer = torch.load(path, weights_only=True)
    logged = trainer._flush_log(1.0)
    assert logged["train/loss"] == 3.0 and logged["train/lr"] == pytest.approx(0.2)
    assert logged["train/ignore_accuracy"] == 0.5 and "train/never" not in logged


class Recorder(Tracker):
    """Keeps every logged record."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, float]] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.setdefault(step, {}).update(metrics)


def test_resume_from_a_checkpoint_inside_a_log_interval_logs_the_same_means(tmp_path):
    """log_every 3, checkpoint at step 2 (as a killed run leaves it): the resumed run's first flush mixes the
    checkpoint's buffered device tensors with new ones and must log what the uninterrupted run logged."""

    def trainer_for(directory) -> Trainer:
        trainer = make_trainer("sdd", directory, grad_accum_steps=1, max_steps=6, log_every=3, checkpoint_every=2)
        trainer.tracker = Recorder()
        return trainer

    full = trainer_for(tmp_path / "full")
    real_save = full.save

    def save(name: str = "latest.pt"):
        path = real_save(name)
        if full.step == 2:
            shutil.copy(path, tmp_path / "step2.pt")
        return path

    full.save = save
    full.fit()
    assert len(torch.load(tmp_path / "step2.pt", weights_only=False)["log_buffer"]["train/loss"]) == 2
    resumed = trainer_for(tmp_path / "resumed")
    resumed.resume(tmp_path / "step2.pt")
    resumed.fit()
    for step in (3, 6):
        for key in ("train/loss", "train/grad_norm", "train/accuracy", "train/all_accuracy", "train/lr"):
            assert resumed.tracker.records[step][key] == full.tracker.records[step][key], (step, key)
