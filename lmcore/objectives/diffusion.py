"""Masked (absorbing-state) discrete diffusion, MDLM-style (Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models").

Forward process: each token is replaced by <mask> independently with probability 1 − α_t (schedules.py).
Parameterisation: SUBS (MDLM §3.2) — the network never predicts <mask> (its logit is −∞) and unmasked tokens are
carried over unchanged, so only masked positions carry loss.
Loss: the continuous-time NELBO (MDLM §3.2–3.3) per token,
    E_t [ −α′_t/(1 − α_t) · Σ_{l masked} −log x_θ(z_t)_l[x_l] ] / #tokens,   (= 1/t weighting for log-linear)
with t drawn antithetically across the batch. exp(NELBO) is an upper bound on perplexity.
Sampling: MDLM's ancestral sampler with the no-change cache; rows are documents (<eos>, then <ignore>).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.config import doc
from lmcore.errors import ConfigError
from lmcore.objectives.base import Batch, Objective
from lmcore.objectives.losses import linear_cross_entropy, output_head
from lmcore.objectives.sampling import sample_from_logits
from lmcore.objectives.schedules import SCHEDULES, MaskSchedule, get_schedule
from lmcore.tokenizer import BOS_ID, EOS_ID, IGNORE_ID, MASK_ID, PAD_ID, UNK_ID

# Never sampled: <mask> (SUBS) and the specials that are never training targets (as in the SDD sampler).
NEVER_SAMPLED = (MASK_ID, PAD_ID, BOS_ID, UNK_ID)


@dataclass
class DiffusionConfig:
    """Masked diffusion's knobs (params.yaml section `diffusion`)."""

    schedule: str = doc("loglinear", "noise schedule: loglinear (α_t = 1 − t) | cosine (α_t = 1 − sin(πt/2))")
    t_min: float = doc(1e-3, "t is drawn in [t_min, 1]: the 1/t weight is unbounded at 0")
    antithetic: bool = doc(True, "low-discrepancy t across the batch (lower-variance NELBO estimate)")
    eval_t_samples: int = doc(4, "t values per validation row (a stratified grid with one jitter)")
    sampling_steps: int = doc(128, "default number of ancestral sampling steps")
    temperature: float = doc(1.0, "default sampling temperature (0 = greedy)")
    top_p: float = doc(1.0, "default nucleus sampling mass")

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"diffusion.schedule must be one of {'|'.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.t_min < 1.0:
            raise ConfigError(f"diffusion.t_min must be in (0, 1), got {self.t_min}")
        if self.eval_t_samples < 1 or self.sampling_steps < 1:
            raise ConfigError("diffusion: eval_t_samples and sampling_steps must be ≥ 1")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("diffusion: temperature ≥ 0 and 0 < top_p ≤ 1 are required")


# ------------------------------------------------------------------ the forward process
def antithetic_times(
    n: int, eps: float, gen: torch.Generator, device: torch.device, antithetic: bool = True
) -> torch.Tensor:
    """n times in [eps, 1): t_i = eps + (1 − eps)·((u + i/n) mod 1), one u ~ U(0,1) shared (or n i.i.d. u's)."""
    if antithetic:
        u = torch.rand((), generator=gen, device=device, dtype=torch.float64)
        u = (u + torch.arange(n, device=device, dtype=torch.float64) / n) % 1.0
    else:
        u = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    return eps + (1.0 - eps) * u


def mask_tokens(
    tokens: torch.Tensor, alpha: torch.Tensor, gen: torch.Generator, maskable: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """z_t ~ q(z_t | x): each maskable token becomes <mask> with probability 1 − α_t (α [B]); returns (z_t, masked)."""
    u = torch.rand(tokens.shape, generator=gen, device=tokens.device, dtype=torch.float64)
    masked = u < (1.0 - alpha.double())[:, None]
    if maskable is not None:
        masked &= maskable
    return tokens.masked_fill(masked, MASK_ID), masked


def subs_logits(logits: torch.Tensor) -> torch.Tensor:
    """SUBS zero-masking (MDLM §3.2): the <mask> logit → −∞, so <mask> is never predicted or sampled."""
    return logits.float().index_fill(-1, torch.tensor([MASK_ID], device=logits.device), -math.inf)


def subs_log_probs(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The full SUBS output log x_θ(z_t) [B, L, V]: softmax without <mask> at masked positions, and a one-hot on
    the input token at unmasked ones (carry-over unmasking), which therefore never carry loss."""
    carried = torch.full_like(logits, -math.inf, dtype=torch.float32).scatter(-1, z[..., None], 0.0)
    return torch.where((z == MASK_ID)[..., None], subs_logits(logits).log_softmax(-1), carried)


def sample_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Length of each row [N, L] up to (not including) its first <eos> or <ignore>; L when there is none."""
    stop = (ids == EOS_ID) | (ids == IGNORE_ID)
    first = stop.int().argmax(-1)
    return torch.where(stop.any(-1), first, torch.full_like(first, ids.shape[-1]))


# ------------------------------------------------------------------ the objective
class DiffusionObjective(Objective):
    """Continuous-time NELBO of absorbing diffusion with SUBS on a bidirectional backbone; ancestral sampler."""

    name = "diffusion"
    causal = False
    batch_kind = "documents"  # one document per row, <ignore> after <eos>: the model learns where text ends
    extra_tokens = 0
    metric_kind = "nelbo_bound"  # val/loss is a NELBO, so exp(val/loss) is an upper bound on perplexity
    Config = DiffusionConfig

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        super().__init__(section)
        self.schedule: MaskSchedule = get_schedule(self.cfg.schedule)
        self.network_calls = 0  # network evaluations of the last sample() call (the cache skips some)

    def _nelbo(
        self, model: nn.Module, batch: Batch, t: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask the batch at times t [B] and score it: (Σ NELBO terms, top-1 hits, #scored), as device tensors.

        Scored positions (hits and the accuracy count) are masked positions that hold text: the <ignore> padding
        is in the NELBO but trivially predictable, and would inflate the accuracy (most of a short response's row
        is padding)."""
        tokens = batch["tokens"]
        # <pad> is never noised or scored; <ignore> is a real target (it teaches where a document ends).
        maskable = tokens != PAD_ID
        if "loss_mask" in batch:  # fine-tuning (as in LLaDA's SFT): only response tokens are masked; the prompt
            maskable &= batch["loss_mask"].bool()  # stays clean and is pure context
        z, masked = mask_tokens(tokens, self.schedule.alpha(t), gen, maskable)
        scored = masked & _document_tokens(batch)
        weight = self.schedule.weight(t).float()
        # Carry-over unmasking: unmasked positions have x_θ = one-hot(z_l) = one-hot(x_l), i.e. zero loss, so only
        # masked positions are scored — whatever the network outputs elsewhere.
        # No time conditioning: under the absorbing process the fraction of <mask> in z_t already tells t, and
        # MDLM reports time conditioning unnecessary, so the backbone sees only z_t.
        if self.loss_path == "reference":
            logits = subs_logits(model(z))
            nll = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
            terms = torch.where(masked, weight[:, None] * nll, torch.zeros_like(nll))
            hits = (logits.argmax(-1) == tokens) & scored
            return terms.sum(), hits.sum(), scored.sum()
        # Lean: the head runs on the masked rows only. Gathering them needs their number on the host: this
        # nonzero is the loss's one device→host read, issued before the backbone so the device has only the
        # masking queued when it happens.
        rows = masked.flatten().nonzero().squeeze(1)
        hidden = model(z, return_hidden=True).flatten(0, 1).index_select(0, rows)
        row_weight = weight.repeat_interleave(tokens.shape[1]).index_select(0, rows)
        terms, hits = linear_cross_entropy(
            hidden, output_head(model).weight, tokens.flatten().index_select(0, rows), row_weight, banned=(MASK_ID,)
        )  # SUBS: <mask> is never predicted
        return terms, (hits & scored.flatten().index_select(0, rows)).sum(), scored.sum()

    def loss(
        self, model: nn.Module, batch: Batch, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """NELBO per document token at antithetic t; `accuracy` = top-1 on masked positions (NaN if none)."""
        tokens = batch["tokens"]
        t = antithetic_times(tokens.shape[0], self.cfg.t_min, gen, tokens.device, self.cfg.antithetic)
        terms, hits, scored = self._nelbo(model, batch, t, gen)
        loss = terms / _document_tokens(batch).sum().clamp_min(1)
        return loss, {"accuracy": (hits / scored).detach()}

    @torch.no_grad()
    def eval_stats(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, float]:
        """Sums over `eval_t_samples` (K) passes. The K·B times form one stratified grid over [eps, 1] with a
        single jitter u from `gen`: pass k gives row i the cell k·B + i, so every row sees K evenly spread t and
        the batch covers the grid once. loss_sum = Σ_rows mean_k NELBO; accuracy over all masked positions.

        The NELBO of a padded row bounds −log p(document): the <ignore> padding after <eos> is determined by the
        document, and its terms are included. `count` is the document's tokens (<eos> included, padding not), so
        val/loss is in nats per document token, the unit of AR's loss and of the corpus entropy floor."""
        tokens = batch["tokens"]
        B, K = tokens.shape[0], self.cfg.eval_t_samples
        grid = antithetic_times(K * B, self.cfg.t_min, gen, tokens.device).view(K, B)
        sums = torch.zeros(3, dtype=torch.float64, device=tokens.device)  # Σ terms, hits, scored over the passes
        for k in range(K):
            sums += torch.stack([x.double() for x in self._nelbo(model, batch, grid[k], gen)])
        loss_sum, correct, acc_count, count = torch.cat((sums, _document_tokens(batch).sum().double()[None])).tolist()
        return {"loss_sum": loss_sum / K, "count": count, "correct": correct, "acc_count": acc_count}

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        num: int,
        length: int,
        gen: torch.Generator,
        *,
        prompt: torch.Tensor | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Ancestral sampling (MDLM's reverse process) over `steps` times 1 = t_0 > … > t_S = 0 from all-<mask>.

        A still-masked position is unmasked at t_k → t_{k+1} with probability (α_{k+1} − α_k)/(1 − α_k) (MDLM's
        SUBS posterior), to a token drawn (float32) from x_θ(z_{t_k}) with `temperature`/`top_p`; at the last step
        every remaining <mask> is filled. Unmasked tokens never change. The prompt ([P] or [num, P]) is kept fixed
        at the start; any <mask> inside it is infilled. After the first generated <eos>, generated positions
        become <ignore> (the training format), so rows have variable length (see `sample_lengths`). None arguments
        take the Config's values; `self.network_calls` counts the network evaluations.

        Those per-step coin flips telescope: a position is still masked at step k with probability
        Π_{j<k} (1 − α_{j+1})/(1 − α_j) = 1 − α_k, so the step τ that unmasks it is drawn up front by inverse CDF,
        τ = #{k ≥ 1 : α_k ≤ u} with one u ~ U(0, 1) per position: the same process. The host reads, once, how many
        positions each step unmasks; steps that unmask nothing are skipped without a network call (MDLM's cache:
        without time conditioning an unchanged z_t gives the same x_θ), and each call's head runs on the rows
        unmasked at that step only. No other device→host read happens in the loop.
        """
        cfg = self.cfg
        temperature = cfg.temperature if temperature is None else temperature
        top_p = cfg.top_p if top_p is None else top_p
        steps = steps or cfg.sampling_steps
        device = gen.device  # the generator lives on the model's device
        z = torch.full((num, length), MASK_ID, dtype=torch.long, device=device)
        if prompt is not None and prompt.numel() > 0:
            prompt = prompt.to(device).view(-1, prompt.shape[-1]).expand(num, -1)
            if prompt.shape[1] > length:
                raise ValueError(f"sample: prompt of {prompt.shape[1]} tokens exceeds length {length}")
            z[:, : prompt.shape[1]] = prompt
        generated = z == MASK_ID
        alphas = self.schedule.alpha(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device))
        u = torch.rand((num, length), generator=gen, device=device, dtype=torch.float64)
        # α_S = 1 > u, so τ ≤ S − 1: the last step fills whatever is left. Positions given by the prompt: τ = S.
        tau = torch.where(generated, torch.searchsorted(alphas[1:], u, right=True), steps).flatten()
        order = tau.argsort(stable=True)  # positions grouped by the step that unmasks them
        counts = torch.zeros(steps + 1, dtype=torch.long, device=device).index_add_(0, tau, torch.ones_like(tau))
        counts = counts[:steps].tolist()  # the one device→host read
        flat, head = z.view(-1), output_head(model)
        self.network_calls, offset = 0, 0
        for n in counts:
            if not n:
                continue
            rows = order[offset : offset + n]
            offset += n
            hidden = model(z, return_hidden=True).flatten(0, 1).index_select(0, rows)
            self.network_calls += 1
            logits = head(hidden).float()
            for token in NEVER_SAMPLED:
                logits.select(-1, token).fill_(-math.inf)
            flat.index_copy_(0, rows, sample_from_logits(logits, gen, temperature, top_p))
        eos = (z == EOS_ID) & generated
        after_eos = (eos.cumsum(1) - eos.long()) > 0
        return z.masked_fill(after_eos & generated, IGNORE_ID)


def _document_tokens(batch: Batch) -> torch.Tensor:
    """Positions that hold the text (up to and including <eos>): neither <pad> nor <ignore> padding.

    With a loss_mask (fine-tuning) only the response's tokens count: the NELBO is per response token.
    """
    tokens = batch["tokens"]
    doc = (tokens != PAD_ID) & (tokens != IGNORE_ID)
    return doc & batch["loss_mask"].bool() if "loss_mask" in batch else doc
