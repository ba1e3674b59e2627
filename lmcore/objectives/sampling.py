"""Sampling helpers shared by every objective's sampler."""

from __future__ import annotations

import torch


def filter_top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches top_p (nucleus sampling); renormalise.

    top_p = 1 returns `probs` itself, with no sort; below 1 every row is sorted, so callers pass only the rows
    they sample from."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # A token survives when the mass strictly before it is < top_p, so the top token always survives.
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def exponential_race(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scores p_i / E_i with E_i ~ Exp(1) i.i.d.: the argmax is a draw from p, the top-k are k draws without
    replacement (Gumbel-max / Gumbel-top-k: −log E is Gumbel noise, in the exp domain). This is torch.multinomial's
    own one-draw algorithm, without its host-side validity check (a sync on CUDA). Computed in probs' dtype."""
    race = torch.empty_like(probs).exponential_(generator=gen)
    return torch.div(probs, race, out=race)


def sample_from_logits(
    logits: torch.Tensor,
    gen: torch.Generator,
    temperature: float = 1.0,
    top_p: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw one token per row of logits [..., V]; temperature 0 is greedy. Softmax and draw run in `dtype`.

    In float64 the draw equals torch.multinomial(probs, 1) for the same generator (the AR sampler keeps its
    earlier outputs that way); float32 has float32's rounding, as multinomial on float32 probabilities has.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = filter_top_p(torch.softmax(logits.to(dtype) / temperature, dim=-1), top_p)
    return exponential_race(probs, gen).argmax(-1)
