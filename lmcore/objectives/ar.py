"""Autoregressive objective: next-token cross-entropy on a causal backbone; sampling with a KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.config import doc
from lmcore.errors import ConfigError
from lmcore.objectives.base import Batch, Objective
from lmcore.objectives.decode import decode_step
from lmcore.objectives.losses import linear_cross_entropy, output_head
from lmcore.objectives.sampling import sample_from_logits
from lmcore.tokenizer import EOS_ID, IGNORE_ID, PAD_ID

ROW_KINDS = ("windows", "documents")


@dataclass
class ARConfig:
    """The AR objective's knobs (params.yaml section `ar`): the rows it trains on and how its sampler decodes."""

    rows: str = doc(
        "windows",
        "training rows: windows (random spans of the packed stream, nanoGPT's and litgpt's convention; most start "
        "mid-document) | documents (one document per row from the <eos> that opens it, padded with <ignore>, the "
        "rows diffusion and SDD train on; a document longer than seq_len is cropped to a contiguous span)",
    )
    compile_decode: bool = doc(
        False,
        "torch.compile the one-token decode step on a fixed-shape KV cache (one graph per batch size and "
        "length, compiled at the first generation; lmcore/objectives/decode.py)",
    )

    def __post_init__(self) -> None:
        if self.rows not in ROW_KINDS:
            raise ConfigError(f"ar.rows must be one of {'|'.join(ROW_KINDS)}, got {self.rows!r}")


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

    @property
    def batch_kind(self) -> str:  # type: ignore[override]  # chosen per run (ar.rows), not per class
        return self.cfg.rows

    # Tokens decoded between checks whether every row has emitted <eos>: each check is a device→host read.
    eos_check_every = 16

    def _scored(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σ NLL over scored targets, their top-1 hits, their count), as device tensors."""
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        mask = _target_mask(batch, targets)
        if self.loss_path == "reference":
            logits = model(inputs)
            nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
            hits = logits.argmax(-1) == targets
            nll_sum = (nll * mask).sum()
        else:  # every position predicts a target: the head runs on all rows, chunked (losses.py)
            hidden = model(inputs, return_hidden=True)
            nll_sum, hits = linear_cross_entropy(
                hidden.flatten(0, 1), output_head(model).weight, targets.flatten(), mask.flatten()
            )
            hits = hits.view_as(targets)
        return nll_sum, (hits & mask).sum(), mask.sum()

    def loss(
        self, model: nn.Module, batch: Batch, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nll_sum, correct, count = self._scored(model, batch)
        n = count.clamp_min(1)
        return nll_sum / n, {"accuracy": (correct / n).detach()}

    @torch.no_grad()
    def eval_stats(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, float]:
        """Sums of NLL, hits and scored targets. A document row (<eos>, the document, <ignore> padding) scores
        each document token from the document's start, its closing <eos> included: val/loss is per document
        token, like diffusion's NELBO and the entropy floor. A batch marked `packed` holds windows of the packed
        stream, starting mid-document, as AR trains on them: they sum into `window_*` (val/window_loss). Every
        key is returned for both kinds, so sums over ranks see the same keys."""
        loss_sum, correct, count = torch.stack([x.double() for x in self._scored(model, batch)]).tolist()
        mine, other = ("window_", "") if "packed" in batch else ("", "window_")
        return {
            f"{mine}loss_sum": loss_sum,
            f"{mine}count": count,
            f"{mine}correct": correct,
            **{f"{other}{k}": 0.0 for k in ("loss_sum", "count", "correct")},
        }

    @torch.no_grad()
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
        """Decode left to right with a KV cache; rows that emitted <eos> are padded with <pad> afterwards.

        The cache is preallocated for the whole output; the head runs on the last prompt position, then on each
        new token only. Whether every row has ended is read every `eos_check_every` tokens (rows that ended
        keep emitting <pad>, so the output does not depend on it). Tokens are drawn in float64 by the exponential
        race, which is torch.multinomial's own algorithm: a generator gives the same samples as before.
        """
        device = next(model.parameters()).device
        if prompt is None or prompt.numel() == 0:
            prompt = torch.full((num, 1), EOS_ID, dtype=torch.long, device=device)  # <eos> opens a document
            drop_first = True
        else:
            prompt = prompt.to(device).expand(num, -1) if prompt.dim() == 1 or prompt.shape[0] == 1 else prompt
            drop_first = False
        total = length + (1 if drop_first else 0)
        start = prompt.shape[1]
        out = torch.full((prompt.shape[0], max(total, start)), PAD_ID, dtype=torch.long, device=device)
        out[:, :start] = prompt
        step = decode_step(model, out.shape[0], out.shape[1], device, self.cfg.compile_decode)
        logits = step.prefill(prompt)
        done = torch.zeros(out.shape[0], dtype=torch.bool, device=device)
        for pos in range(start, total):
            nxt = sample_from_logits(logits, gen, temperature, top_p, dtype=torch.float64)
            nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
            done |= nxt == EOS_ID
            out[:, pos] = nxt
            if pos + 1 == total or ((pos + 1 - start) % self.eos_check_every == 0 and bool(done.all())):
                break
            logits = step(nxt[:, None], pos)
        return out[:, 1:] if drop_first else out
