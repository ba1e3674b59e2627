"""The interface every architecture's objective implements; the trainer and evaluation only talk to this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from lmcore.config import build_dataclass
from lmcore.models import ModelConfig

Batch = dict[str, torch.Tensor]


class Objective(ABC):
    """Loss, evaluation statistics and sampling for one architecture on the shared backbone."""

    name: ClassVar[str]
    # Which batches the objective trains on: "windows" (random spans of the packed stream, shape
    # [B, seq_len + extra_tokens]) or "documents" (one document per row, padded with <ignore>).
    batch_kind: ClassVar[str] = "windows"
    extra_tokens: ClassVar[int] = 0
    causal: ClassVar[bool] = False
    # What val/loss and val/perplexity mean for this architecture (docs/architecture.md, "Metrics").
    metric_kind: ClassVar[str]
    Config: ClassVar[type]
    # How `loss` and `eval_stats` apply the output head (lmcore/objectives/losses.py): "lean" (hidden states,
    # the head on the scored rows only, chunked cross-entropy) or "reference" (full logits; tests, benchmark).
    loss_path: str = "lean"
    # How `train.compile` traces shapes (lmcore/train/compiling.py): None = torch's automatic dynamic; False = one
    # static graph per shape stage of `slots_schedule` (SDD: per k of its curriculum).
    compile_dynamic: ClassVar[bool | None] = None

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        self.cfg = build_dataclass(self.Config, section or {}, f"params.yaml: {self.name}")

    def model_config(
        self, preset: ModelConfig, vocab_size: int, seq_len: int, gradient_checkpointing: bool
    ) -> ModelConfig:
        """The final model config of a run on this objective: the preset with the corpus' vocabulary, rows of
        seq_len + extra_tokens and this objective's attention direction (built once; never changed after)."""
        return preset.finalize(
            vocab_size=vocab_size,
            context=seq_len + self.extra_tokens,
            causal=self.causal,
            gradient_checkpointing=gradient_checkpointing,
        )

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        """The network this objective trains; by default the shared backbone."""
        from lmcore.models import Transformer

        check_direction(self, model_cfg)
        return Transformer(model_cfg)

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: Batch, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss (a scalar to backpropagate) and per-batch metrics such as `accuracy`, as detached 0-dim
        tensors on the batch's device (no host sync); NaN means nothing was there to score (the trainer skips it)."""

    @abstractmethod
    def eval_stats(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, float]:
        """Sums over a validation batch: `loss_sum` and `count` (loss = loss_sum/count), `correct` (top-1 hits)
        and, when accuracy is over other positions than the loss, `acc_count`; extra `<x>_correct`/`<x>_count`
        pairs are reported as `val/<x>_accuracy`."""

    @abstractmethod
    def sample(
        self,
        model: nn.Module,
        num: int,
        length: int,
        gen: torch.Generator,
        *,
        prompt: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Generate `num` sequences of `length` token ids (prompt included, when given)."""

    # Training-time state that must survive a resume (e.g. SDD's current k). Stateless by default.
    def on_step(self, step: int) -> dict[str, float]:
        """Called before each optimizer step; returns extra metrics to log (e.g. the curriculum's k)."""
        return {}

    def slots_per_position(self) -> int:
        """How many backbone slots each sequence position occupies (SDD: the current k); used for MFU."""
        return 1

    def slots_schedule(self) -> tuple[tuple[int, ...], int]:
        """(slots per position by curriculum stage, optimizer steps per stage): what FLOPs budgets count with.
        Default: one slot throughout (SDD: its k curriculum)."""
        return (1,), 0

    def hold_schedules(self) -> None:
        """Keep training-time schedules where they are (fine-tuning continues a pretrained model; default: none)."""

    def state_dict(self) -> dict[str, Any]:
        """Objective state saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned."""


def check_direction(objective: Objective, model_cfg: ModelConfig) -> None:
    """A model config must be finalized for the objective's attention direction (see Objective.model_config)."""
    if model_cfg.causal != objective.causal:
        raise ValueError(
            f"{objective.name}: model config has causal={model_cfg.causal}, the objective needs "
            f"causal={objective.causal} (build it with objective.model_config(...))"
        )
