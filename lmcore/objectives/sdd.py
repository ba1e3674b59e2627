"""Sparse Distribution Diffusion (SDD): each position holds k weighted token candidates instead of one token.

State: (probs, indices) [B, L, k], probs descending and true softmax values (not renormalised over k), the k
tokens of a position distinct. Clean state: the truth with 1 − ε(k−1), then k−1 random tokens with ε each.
Forward process at noise level n = 1 − cos(πt/2): each candidate is swapped for a random token with probability
n·(1 − (p/p_max)(1 − n)) and then holds 1/V; the others are flattened toward uniform, p ← (1 − n)·p + n/V.
At t = 1 every candidate is a random token with 1/V: exactly the sampler's starting state.
The denoiser (lmcore/models/sdd.py) predicts the clean token of every position; the loss is its cross-entropy at
t ~ U(0, 1) (a denoising CE: exp(loss) is not a likelihood). k grows along a curriculum (k_schedule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.config import doc
from lmcore.errors import ConfigError
from lmcore.models import ModelConfig
from lmcore.models.sdd import SDDDenoiser
from lmcore.objectives.base import Batch, Objective, check_direction
from lmcore.objectives.losses import linear_cross_entropy, output_head
from lmcore.objectives.sampling import exponential_race, filter_top_p
from lmcore.tokenizer import BOS_ID, EOS_ID, IGNORE_ID, MASK_ID, PAD_ID, UNK_ID

NEVER_SAMPLED = (PAD_ID, BOS_ID, MASK_ID, UNK_ID)


def parse_k_schedule(value: Any) -> list[int]:
    """'1,2,4,8', [1, 2, 4, 8] or 4 → [1, 2, 4, 8] / [4]; every k a positive integer."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        ks = [int(str(k).strip()) for k in items]
    except ValueError:
        raise ConfigError(f"sdd.k_schedule: expected comma-separated integers, got {value!r}") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"sdd.k_schedule: every k must be ≥ 1, got {value!r}")
    return ks


@dataclass
class SDDConfig:
    """SDD's knobs (params.yaml section `sdd`)."""

    candidate_prob: float = doc(0.01, "probability of each of the k−1 random candidates in a clean state")
    # `list[int]` first so config._coerce passes a YAML list or a string through.
    k_schedule: list[int] | str = field(
        default="1,2,4,8",
        metadata={
            "help": 'candidates per position along the curriculum, one stage every k_warmup_steps: a list or "1,2,4,8"'
        },
    )
    k_warmup_steps: int = doc(1000, "optimizer steps per curriculum stage")
    fixed_k: int = doc(0, "> 0: always this k (curriculum off)")
    sampling_steps: int = doc(64, "sampler refinement steps")
    temperature: float = doc(1.0, "sampling temperature (0 = greedy)")
    temperature_schedule: str = doc("constant", "constant | linear (temperature·t: sharper as noise falls)")
    top_p: float = doc(1.0, "nucleus sampling mass")
    candidate_sampling: str = doc("topk", "topk (deterministic) | gumbel (k candidates drawn without replacement)")
    renoise: bool = doc(
        True,
        "sampler: re-noise each step's predicted sparse state to the next time with the forward process; false = "
        "the origin's rule (the prediction itself is the next state, a deterministic update with topk candidates)",
    )

    def __post_init__(self) -> None:
        ks = parse_k_schedule(self.k_schedule)
        self.k_schedule = ",".join(map(str, ks))  # canonical form, as stored in checkpoints
        k_max = max(ks + [self.fixed_k])
        if not 0.0 <= self.candidate_prob or self.candidate_prob * k_max >= 1.0:
            raise ConfigError(
                f"sdd.candidate_prob must satisfy 0 ≤ candidate_prob < 1/k_max = {1 / k_max:.3g}, "
                f"got {self.candidate_prob}"
            )
        if self.fixed_k < 0 or (self.fixed_k == 0 and len(ks) > 1 and self.k_warmup_steps <= 0):
            raise ConfigError("sdd: fixed_k must be ≥ 0 and k_warmup_steps > 0 when the curriculum is on")
        if self.sampling_steps < 1 or self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("sdd: sampling_steps ≥ 1, temperature ≥ 0 and 0 < top_p ≤ 1 are required")
        if self.temperature_schedule not in ("constant", "linear"):
            raise ConfigError(f"sdd.temperature_schedule must be constant|linear, got {self.temperature_schedule!r}")
        if self.candidate_sampling not in ("topk", "gumbel"):
            raise ConfigError(f"sdd.candidate_sampling must be topk|gumbel, got {self.candidate_sampling!r}")

    def schedule(self) -> list[int]:
        """The k curriculum as a list."""
        return parse_k_schedule(self.k_schedule)


# ------------------------------------------------------------------ the noise process
def noise_level(t: torch.Tensor) -> torch.Tensor:
    """n(t) = 1 − cos(πt/2): 0 at t = 0 (clean), 1 at t = 1 (uniform); computed in float64, clamped to [0, 1]."""
    return (1.0 - torch.cos(math.pi * t.double() / 2)).clamp(0.0, 1.0)


def draw_distinct(indices: torch.Tensor, redraw: torch.Tensor, vocab_size: int, gen: torch.Generator) -> torch.Tensor:
    """Replace `indices` where `redraw` by uniform random tokens, distinct from the position's other candidates.

    Slot j draws uniformly from the tokens not held by kept slots or by redrawn slots before it (the kept ones are
    assumed distinct), without rejection or host syncs: r ~ U{0..V−m−1} is shifted past each excluded token in
    ascending order, giving the r-th token of the complement.
    """
    idx, k = indices.clone(), indices.shape[-1]
    for j in range(k):
        blocking = ~redraw
        blocking[..., :j] = True  # earlier slots are final
        blocking[..., j] = False
        excluded = torch.where(blocking, idx, vocab_size).sort(dim=-1).values  # vocab_size: no-op sentinel
        u = torch.rand(idx.shape[:-1], generator=gen, device=idx.device, dtype=torch.float64)
        r = (u * (vocab_size - blocking.sum(-1))).long()
        for c in range(k):
            r = r + (r >= excluded[..., c]).long()
        idx[..., j] = torch.where(redraw[..., j], r, idx[..., j])
    return idx


def sort_state(probs: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each position's candidates by probability, descending (stable, so ties keep their order)."""
    probs, order = probs.sort(dim=-1, descending=True, stable=True)
    return probs, indices.gather(-1, order)


def clean_state(
    tokens: torch.Tensor, k: int, vocab_size: int, eps: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_0 from tokens [B, L]: the truth with 1 − ε(k−1) first, then k−1 distinct random others with ε each."""
    idx = tokens[..., None].expand(*tokens.shape, k).clone()
    redraw = torch.ones_like(idx, dtype=torch.bool)
    redraw[..., 0] = False
    idx = draw_distinct(idx, redraw, vocab_size, gen)
    probs = torch.full(idx.shape, eps, dtype=torch.float32, device=tokens.device)
    probs[..., 0] = 1.0 - eps * (k - 1)
    return probs, idx


def add_noise(
    probs: torch.Tensor,
    indices: torch.Tensor,
    t: torch.Tensor,
    vocab_size: int,
    gen: torch.Generator,
    where: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample x_t ~ q(x_t | x_0) at times t [B]; `where` [B, L] (e.g. a loss mask) limits noise to those positions."""
    n = noise_level(t).to(probs.dtype)[:, None, None]
    ratio = probs / probs.max(dim=-1, keepdim=True).values.clamp_min(1e-30)
    # Confident candidates survive longer: the top one is swapped with n², a negligible one with ≈ n.
    swap = torch.rand(probs.shape, generator=gen, device=probs.device) < n * (1 - ratio * (1 - n))
    noisy = torch.where(swap, 1.0 / vocab_size, (1 - n) * probs + n / vocab_size)
    if where is not None:
        swap &= where[..., None]
        noisy = torch.where(where[..., None], noisy, probs)
    return sort_state(noisy, draw_distinct(indices, swap, vocab_size, gen))


def uniform_state(
    shape: tuple[int, int, int], vocab_size: int, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_1: k distinct uniform random tokens per position, each with probability 1/V (the sampler's start)."""
    idx = torch.zeros(shape, dtype=torch.long, device=device)
    idx = draw_distinct(idx, torch.ones(shape, dtype=torch.bool, device=device), vocab_size, gen)
    return torch.full(shape, 1.0 / vocab_size, device=device), idx


# ------------------------------------------------------------------ the objective
class SDDObjective(Objective):
    """Denoising cross-entropy on sparse k-candidate states; k curriculum; a refinement sampler that re-noises."""

    name = "sdd"
    causal = False
    batch_kind = "documents"  # one document per row, <ignore> after <eos>: the model learns where text ends
    extra_tokens = 0
    metric_kind = "denoising_ce"  # exp(val/loss) is not a likelihood
    compile_dynamic = False  # L·k changes only between curriculum stages: one static graph per k
    Config = SDDConfig

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        super().__init__(section)
        self.k = self.k_at(0)

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        """The SDD denoiser on the shared ModelConfig (bidirectional)."""
        check_direction(self, model_cfg)
        return SDDDenoiser(model_cfg)

    # ---------------------------------------------------------------- k curriculum
    def k_at(self, step: int) -> int:
        """k at optimizer step `step`: schedule[i] for steps [i·k_warmup_steps, (i+1)·k_warmup_steps)."""
        if self.cfg.fixed_k > 0:
            return self.cfg.fixed_k
        ks = self.cfg.schedule()
        return ks[min(step // max(self.cfg.k_warmup_steps, 1), len(ks) - 1)]

    def on_step(self, step: int) -> dict[str, float]:
        """Set the curriculum's k for this step; logged as train/k."""
        self.k = self.k_at(step)
        return {"k": float(self.k)}

    def slots_per_position(self) -> int:
        """Each position holds k candidate slots in the denoiser."""
        return self.k

    def state_dict(self) -> dict[str, Any]:
        """The current k (sampling after a reload uses the k the model was last trained with)."""
        return {"k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the current k."""
        if "k" in state:
            self.k = int(state["k"])

    def slots_schedule(self) -> tuple[tuple[int, ...], int]:
        """fixed_k throughout, else k_schedule with one stage every k_warmup_steps (the rule of k_at)."""
        if self.cfg.fixed_k > 0:
            return (self.cfg.fixed_k,), 0
        return tuple(self.cfg.schedule()), self.cfg.k_warmup_steps

    def hold_schedules(self) -> None:
        """Fine-tuning keeps the k pretraining ended with instead of restarting the curriculum."""
        if self.cfg.fixed_k <= 0:
            self.cfg.fixed_k = self.k

    # ---------------------------------------------------------------- loss and evaluation
    def _denoise(
        self, model: nn.Module, batch: Batch, gen: torch.Generator, t: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Noise the batch at times t [B], run the denoiser: Σ nll over scored positions, hits and masks."""
        tokens = batch["tokens"]
        vocab = model.cfg.vocab_size
        probs, idx = clean_state(tokens, self.k, vocab, self.cfg.candidate_prob, gen)
        # Fine-tuning: only response positions are noised and scored; the prompt stays a clean state.
        response = batch["loss_mask"].bool() if "loss_mask" in batch else None
        probs, idx = add_noise(probs, idx, t, vocab, gen, response)
        scored = tokens != PAD_ID  # <ignore> targets are scored: they teach where a document ends
        if response is not None:
            scored &= response
        if self.loss_path == "reference":
            logits = model(probs, idx, t).float()
            nll = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
            nll_sum, hit = (nll * scored).sum(), logits.argmax(-1) == tokens
        else:  # nearly every position is scored (all but <pad>): the head runs on all rows, chunked (losses.py)
            hidden = model(probs, idx, t, return_hidden=True)
            nll_sum, hit = linear_cross_entropy(
                hidden.flatten(0, 1), output_head(model).weight, tokens.flatten(), scored.flatten()
            )
            hit = hit.view_as(tokens)
        return {
            "nll_sum": nll_sum,
            "hit": hit,
            "scored": scored,
            # Accuracy's positions: text whose truth is no longer the top candidate. The <ignore> padding after
            # <eos> is scored by the loss but left out here, as diffusion's accuracy leaves it out: it is trivially
            # predictable (≈98% right) and would inflate the figure (ignore_accuracy reports it on its own).
            "corrupted": scored & (idx[..., 0] != tokens) & (tokens != IGNORE_ID),
            "ignore": scored & (tokens == IGNORE_ID),
        }

    def loss(
        self, model: nn.Module, batch: Batch, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean denoising CE over scored positions, t ~ U(0, 1) drawn antithetically (stratified) over the batch."""
        B = batch["tokens"].shape[0]
        device = batch["tokens"].device
        u = torch.rand((), generator=gen, device=device, dtype=torch.float64)
        t = (u + torch.arange(B, device=device, dtype=torch.float64) / B) % 1.0
        out = self._denoise(model, batch, gen, t)
        loss = out["nll_sum"] / out["scored"].sum().clamp_min(1)
        # `accuracy` is on corrupted positions, the ones a model must predict (docs/architecture.md, "Metrics"),
        # as AR's is on next tokens and diffusion's on masked ones; `all_accuracy` includes the positions it can
        # copy. NaN (0/0) when there is nothing to score: the trainer leaves it out of averages instead of a 0.
        metrics = {
            name: ((out["hit"] & mask).sum() / mask.sum()).detach()
            for name, mask in (
                ("accuracy", out["corrupted"]),
                ("all_accuracy", out["scored"]),
                ("ignore_accuracy", out["ignore"]),
            )
        }
        return loss, metrics

    @torch.no_grad()
    def eval_stats(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> dict[str, float]:
        """Sums at the fixed midpoint grid t_i = (i + ½)/B over the rows; candidates and swaps from `gen`."""
        B = batch["tokens"].shape[0]
        t = (torch.arange(B, device=batch["tokens"].device, dtype=torch.float64) + 0.5) / B
        out = self._denoise(model, batch, gen, t)
        hit, scored = out["hit"], out["scored"]
        # → val/loss, val/accuracy, val/all_accuracy, val/ignore_accuracy; one device→host read for all of them.
        stats = {
            "loss_sum": out["nll_sum"],
            "count": scored.sum(),
            "correct": (hit & out["corrupted"]).sum(),
            "acc_count": out["corrupted"].sum(),
        }
        for prefix, mask in (("all_", scored), ("ignore_", out["ignore"])):
            stats[f"{prefix}count"] = mask.sum()
            stats[f"{prefix}correct"] = (hit & mask).sum()
        return dict(zip(stats, torch.stack([v.double() for v in stats.values()]).tolist()))

    # ---------------------------------------------------------------- sampling
    def _next_state(
        self, logits: torch.Tensor, k: int, temperature: float, top_p: float, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted x_0 as a sparse state: k candidates of the tempered, top-p softmax with their true values.

        `logits` (float32, specials at −∞) is overwritten: the softmax is computed in place, in float32. Candidates
        are the top-k tokens (`topk`) or k draws without replacement by the exponential race (`gumbel`)."""
        if temperature <= 0:  # the greedy limit: all mass on the argmax (the other k − 1 candidates hold 0)
            top = logits.topk(k, dim=-1).indices
            probs = torch.zeros(top.shape, device=top.device)
            probs[..., 0] = 1.0
            return probs, top
        p = logits.div_(temperature)
        p = p.sub_(p.amax(-1, keepdim=True)).exp_()
        p = filter_top_p(p.div_(p.sum(-1, keepdim=True)), top_p)
        score = exponential_race(p, gen) if self.cfg.candidate_sampling == "gumbel" else p
        top = score.topk(k, dim=-1).indices
        return sort_state(p.gather(-1, top), top)

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
        """Refine the uniform state x_1 over `steps` times 1 = t_0 > … > t_{S−1} = 1/S: predict x_0, keep its top-k
        (tempered, top-p) as a sparse state, re-noise it to t_{s+1} (`renoise`; without it that state is the next
        input as it is, at t_{s+1}: the origin's rule); tokens = argmax of the last prediction.

        None arguments take the Config's values. A prompt stays a clean state. Tokens after the first generated
        <eos> become <ignore> (the training format), so decoded samples have variable length. Each step makes one
        float32 copy of the logits and works in it (softmax, candidates); nothing is read back to the host.
        """
        cfg = self.cfg
        temperature = cfg.temperature if temperature is None else temperature
        top_p = cfg.top_p if top_p is None else top_p
        steps = steps or cfg.sampling_steps
        device, vocab, k = next(model.parameters()).device, model.cfg.vocab_size, self.k
        probs, idx = uniform_state((num, length, k), vocab, gen, device)
        fixed = torch.zeros(num, length, 1, dtype=torch.bool, device=device)
        has_prompt = prompt is not None and prompt.numel() > 0
        if has_prompt:
            prompt = prompt.to(device).reshape(-1, prompt.shape[-1]).expand(num, -1)
            if prompt.shape[1] > length:
                raise ValueError(f"prompt of {prompt.shape[1]} tokens is longer than length={length}")
            fixed[:, : prompt.shape[1]] = True
            full = F.pad(prompt, (0, length - prompt.shape[1]), value=IGNORE_ID)
            clean = clean_state(full, k, vocab, cfg.candidate_prob, gen)
            probs, idx = torch.where(fixed, clean[0], probs), torch.where(fixed, clean[1], idx)
        times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)
        host_times = [1.0 - s / steps for s in range(steps + 1)]  # the same times, for the host (no device read)
        for s in range(steps):
            logits = model(probs, idx, times[s].expand(num)).float()
            for token in NEVER_SAMPLED:
                logits.select(-1, token).fill_(-math.inf)
            if s + 1 == steps:
                break
            tau = temperature * (host_times[s] if cfg.temperature_schedule == "linear" else 1.0)
            x0 = self._next_state(logits, k, tau, top_p, gen)
            # Re-noising keeps the input on the forward process' marginals at t_{s+1}, the states the denoiser was
            # trained on; fed its own sharp prediction instead, a weakly trained model locks into repetitions.
            probs, idx = add_noise(*x0, times[s + 1].expand(num), vocab, gen) if cfg.renoise else x0
            if has_prompt:  # the prompt is given, not generated: it stays its clean state throughout
                probs, idx = torch.where(fixed, clean[0], probs), torch.where(fixed, clean[1], idx)
        out = logits.argmax(-1)
        if has_prompt:
            out[:, : prompt.shape[1]] = prompt
        eos = (out == EOS_ID) & ~fixed[..., 0]
        return out.masked_fill((eos.cumsum(1) - eos.long()) > 0, IGNORE_ID)
