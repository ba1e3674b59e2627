"""Noise schedules of the absorbing (masked) diffusion: α_t = P(a token is still clean at time t), t ∈ [0, 1].

Each schedule gives α_t and the NELBO weight −α′_t / (1 − α_t) of the continuous-time bound (MDLM, Sahoo et al.
2024, §3.2–3.3). Both are computed in float64: the weight diverges like 1/t as t → 0.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch


class MaskSchedule(ABC):
    """α_t decreasing from α_0 = 1 (clean) to α_1 = 0 (every token is <mask>)."""

    name: str

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability α_t that a token is unmasked at time t."""

    @abstractmethod
    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """The NELBO weight −α′_t / (1 − α_t) on the cross-entropy of masked tokens."""


class LogLinear(MaskSchedule):
    """α_t = 1 − t: MDLM's log-linear schedule (σ(t) = −log(1 − t)); the weight is 1/t."""

    name = "loglinear"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - t.double()

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / t.double()


class Cosine(MaskSchedule):
    """α_t = 1 − cos(π(1 − t)/2) = 1 − sin(πt/2): MaskGIT's cosine mask ratio (Chang et al. 2022) as a masked
    diffusion schedule (MD4, Shi et al. 2024, cosine schedule). It masks faster than log-linear at small t.
    The weight is (π/2)·cos(πt/2)/sin(πt/2) = (π/2)·cot(πt/2)."""

    name = "cosine"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.sin(math.pi * t.double() / 2)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        half = math.pi * t.double() / 2
        return (math.pi / 2) * torch.cos(half) / torch.sin(half)


SCHEDULES: dict[str, MaskSchedule] = {s.name: s for s in (LogLinear(), Cosine())}


def get_schedule(name: str) -> MaskSchedule:
    """The schedule called `name` (loglinear | cosine)."""
    return SCHEDULES[name]
