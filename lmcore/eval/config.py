"""The `evaluate:` section of params.yaml: what the evaluate stage measures and how hard it tries."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcore.config import build_dataclass, read_section
from lmcore.errors import ConfigError

METRIC_GROUPS = ("perplexity", "accuracy", "generation", "speed")


@dataclass
class EvaluateConfig:
    """Evaluation knobs; the defaults keep a tiny model's evaluation with 100 samples near a minute on CPU."""

    metrics: str = "perplexity,accuracy,generation,speed"  # any of perplexity|accuracy|generation|speed
    num_samples: int = 100  # unconditional samples for the generation metrics
    num_continuations: int = 10  # validation documents whose prefix the model continues
    prefix_tokens: int = 16  # prompt length (tokens) of those continuations
    length: int = 0  # sampled row length in tokens (prompt included); 0 = the checkpoint's train seq_len
    steps: int = 16  # sampling steps for the generation metrics (architectures whose sampler has steps)
    # A YAML list or "8,32,128" (`list[int]` first so config._coerce passes either through, as for sdd.k_schedule).
    steps_sweep: list[int] | str = "4,16,64"  # step counts for quality and speed against steps
    sweep_samples: int = 8  # samples per step count in the sweep
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 25  # rows per sampling call ("batched" speed)
    speed_repeats: int = 2  # batch-1 samples timed per setting
    eval_batches: int = 0  # validation batches; 0 = the checkpoint's train eval_batches (numbers match training)
    judge: str = "checkpoints/ar/best.pt"  # AR checkpoint for generative perplexity; "" = none
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    wandb: bool = True
    wandb_project: str = "diffusion-lm"

    def __post_init__(self) -> None:
        groups = self.metric_groups()
        unknown = sorted(groups - set(METRIC_GROUPS))
        if unknown:
            raise ConfigError(f"evaluate.metrics: unknown '{unknown[0]}' (known: {','.join(METRIC_GROUPS)})")
        for name in ("num_samples", "num_continuations", "length", "eval_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"evaluate.{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("prefix_tokens", "steps", "sweep_samples", "batch_size", "speed_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"evaluate.{name} must be ≥ 1, got {getattr(self, name)}")
        self.sweep()  # validates the list
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("evaluate: temperature ≥ 0 and 0 < top_p ≤ 1 are required")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"evaluate.dtype must be auto|bf16|fp16|fp32, got '{self.dtype}'")

    def metric_groups(self) -> set[str]:
        """The requested metric groups as a set."""
        return {m.strip() for m in self.metrics.split(",") if m.strip()}

    def sweep(self) -> list[int]:
        """steps_sweep as a sorted list of positive integers (empty string: no sweep)."""
        items = self.steps_sweep if isinstance(self.steps_sweep, (list, tuple)) else str(self.steps_sweep).split(",")
        try:
            steps = sorted({int(str(s).strip()) for s in items if str(s).strip()})
        except ValueError:
            raise ConfigError(f"evaluate.steps_sweep: expected comma-separated integers, got {self.steps_sweep!r}") \
                from None
        if any(s < 1 for s in steps):
            raise ConfigError(f"evaluate.steps_sweep: every step count must be ≥ 1, got {self.steps_sweep!r}")
        return steps


def load_evaluate_config(params_path: str | Path = "params.yaml", **overrides: Any) -> EvaluateConfig:
    """EvaluateConfig from params.yaml `evaluate:` with non-None overrides (e.g. command-line flags)."""
    section = {**read_section(params_path, "evaluate"), **{k: v for k, v in overrides.items() if v is not None}}
    return build_dataclass(EvaluateConfig, section, f"{params_path}: evaluate")
