"""Autoregressive objective: next-token cross-entropy on a causal backbone; sampling with a KV cache."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.models import KVCache
from lmcore.objectives.base import Batch, Objective
from lmcore.objectives.sampling import sample_from_logits
from lmcore.tokenizer import EOS_ID, IGNORE_ID, PAD_ID


@dataclass
class ARConfig:
    """The AR objective has no knobs beyond the shared trainer's."""


def _target_mask(batch: Batch, targets: torch.Tensor) -> torch.Tensor:
    """Positions whose target is scored: not padding, and inside the loss mask when one is given."""
    mask = (targets != PAD_ID) & (targets != IGNORE_ID)
    if "loss_mask" in batch:
        mask &= batch["loss_mask"][:, 1:].bool()
    return mask


class ARObjective(Objective):
    """Next-token prediction: loss = mean over scored positions of -log p(x_{i+1} | x_{<=i})."""

    name = "ar"
    causal = True
    extra_tokens = 1  # a window of seq_len + 1 tokens gives seq_len (input, target) pairs
    metric_kind = "exact"  # val/perplexity = exp(val/loss) is the model's true perplexity
    Config = ARConfig

    def _scored(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = model(inputs)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
        correct = logits.argmax(-1) == targets
        return nll, correct, _target_mask(batch, targets)

    def loss(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        nll, correct, mask = self._scored(model, batch)
        n = mask.sum().clamp_min(1)
        return (nll * mask).sum() / n, {"accuracy": ((correct & mask).sum() / n).item()}

    @torch.no_grad()
    def eval_stats(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, float]:
        nll, correct, mask = self._scored(model, batch)
        return {"loss_sum": (nll * mask).sum().item(), "count": mask.sum().item(),
                "correct": (correct & mask).sum().item()}

    @torch.no_grad()
    def sample(
        self, model: nn.Module, num: int, length: int, gen: torch.Generator, *,
        prompt: torch.Tensor | None = None, temperature: float = 1.0, top_p: float = 1.0, steps: int | None = None,
    ) -> torch.Tensor:
        """Decode left to right with a KV cache; rows that emitted <eos> are padded with <pad> afterwards."""
        device = next(model.parameters()).device
        if prompt is None or prompt.numel() == 0:
            prompt = torch.full((num, 1), EOS_ID, dtype=torch.long, device=device)  # <eos> opens a document
            drop_first = True
        else:
            prompt = prompt.to(device).expand(num, -1) if prompt.dim() == 1 or prompt.shape[0] == 1 else prompt
            drop_first = False
        out = prompt.clone()
        cache = KVCache()
        logits = model(prompt, cache=cache)[:, -1]
        done = torch.zeros(num, dtype=torch.bool, device=device)
        total = length + (1 if drop_first else 0)
        while out.shape[1] < total:
            nxt = sample_from_logits(logits, gen, temperature, top_p)
            nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
            done |= nxt == EOS_ID
            out = torch.cat((out, nxt[:, None]), dim=1)
            if done.all() or out.shape[1] >= total:
                break
            logits = model(nxt[:, None], cache=cache)[:, -1]
        if out.shape[1] < total:
            out = F.pad(out, (0, total - out.shape[1]), value=PAD_ID)
        return out[:, 1:] if drop_first else out
