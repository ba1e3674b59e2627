"""Sampling helpers shared by every objective's sampler."""
from __future__ import annotations

import torch


def filter_top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches top_p (nucleus sampling); renormalise."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # A token survives when the mass strictly before it is < top_p, so the top token always survives.
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def sample_from_logits(
    logits: torch.Tensor, gen: torch.Generator, temperature: float = 1.0, top_p: float = 1.0
) -> torch.Tensor:
    """Draw one token per row of logits [..., V]; temperature 0 is greedy. Sampling runs in float64."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    probs = filter_top_p(probs, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=gen).reshape(probs.shape[:-1])
