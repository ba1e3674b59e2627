"""Architectures compared at equal training compute, from their validation curves (training FLOPs, val loss).

Curves are not monotone (evaluation noise, LR schedule ends, over-fitting), so every curve is read through its
running minimum: the best loss reached with at most that much compute, i.e. the best checkpoint so far. Between
evaluations the loss is interpolated linearly in log compute, the axis on which loss curves are near power laws.
Losses are comparable only between architectures whose val/loss is on one scale: AR's NLL and diffusion's NELBO
(an upper bound on the NLL) are; SDD's denoising cross-entropy is not (README "Metrics").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmcore.errors import ConfigError, DataError

NOT_REACHED = "not reached"


@dataclass(frozen=True)
class Curve:
    """A validation curve: distinct training FLOPs, ascending, and the running minimum of the loss at each."""

    compute: np.ndarray
    best_loss: np.ndarray


def as_curve(points: Iterable[tuple[float, float]], name: str) -> Curve:
    """Validate (training FLOPs, val loss) points of curve `name` and take the running minimum of the loss."""
    pairs = list(points)
    if not pairs:
        raise DataError(f"{name}: no (training FLOPs, val loss) points")
    by_compute: dict[float, float] = {}
    for i, point in enumerate(pairs):
        if not isinstance(point, (tuple, list)) or len(point) != 2:
            raise DataError(f"{name}: point {i} is {point!r}, expected a pair (training FLOPs, val loss)")
        c, loss = point
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
            raise DataError(f"{name}: point {i} has training FLOPs {c!r}, expected a finite positive number")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            raise DataError(f"{name}: point {i} has val loss {loss!r}, expected a finite number")
        by_compute[float(c)] = min(float(loss), by_compute.get(float(c), math.inf))  # repeated evaluations
    compute = np.array(sorted(by_compute))
    return Curve(compute, np.minimum.accumulate(np.array([by_compute[c] for c in compute])))


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def loss_at_budget(curve: Curve, budget: float) -> float | None:
    """The best loss reached with `budget` training FLOPs, interpolated in log compute; None outside the curve
    (beyond its last evaluation: not reached; before its first: not measured)."""
    budget = _positive(budget, "budget")
    if not curve.compute[0] <= budget <= curve.compute[-1]:
        return None
    return float(np.interp(math.log(budget), np.log(curve.compute), curve.best_loss))


def compute_to_reach(curve: Curve, target: float) -> float | None:
    """The training FLOPs at which the best loss first reaches `target`, interpolated in log compute between the
    evaluations around the crossing; None when the curve never reaches it. A target met at the first evaluation
    gives that evaluation's compute (an upper bound: nothing earlier was measured)."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise ConfigError(f"target loss must be a finite number, got {target!r}")
    reached = np.flatnonzero(curve.best_loss <= target)
    if reached.size == 0:
        return None
    j = int(reached[0])
    if j == 0:
        return float(curve.compute[0])
    above, below = curve.best_loss[j - 1], curve.best_loss[j]  # above > target ≥ below
    frac = (above - target) / (above - below)
    lo, hi = math.log(curve.compute[j - 1]), math.log(curve.compute[j])
    return math.exp(lo + frac * (hi - lo))


def compare(
    curves: Mapping[str, Iterable[tuple[float, float]]],
    *,
    budget: float | None = None,
    target: float | None = None,
    reference: str = "ar",
) -> dict[str, Any]:
    """Each architecture's loss at a common FLOPs budget and the compute it needs to reach a common target loss,
    as a multiple of `reference`'s. Defaults: the largest budget every curve reaches (the smallest final compute)
    and the lowest loss every curve reaches (the highest final best loss). None marks "not reached"."""
    if reference not in curves:
        raise DataError(
            f"compute comparison: no curve for the reference architecture '{reference}' "
            f"(curves: {', '.join(curves) or 'none'})"
        )
    parsed = {name: as_curve(points, name) for name, points in curves.items()}
    budget = min(float(c.compute[-1]) for c in parsed.values()) if budget is None else _positive(budget, "budget")
    target = max(float(c.best_loss[-1]) for c in parsed.values()) if target is None else target
    to_target = {name: compute_to_reach(c, target) for name, c in parsed.items()}
    base = to_target[reference]
    rows = {
        name: {
            "final_flops": float(c.compute[-1]),
            "best_loss": float(c.best_loss[-1]),
            "loss_at_budget": loss_at_budget(c, budget),
            "flops_to_target": to_target[name],
            "compute_multiplier": None if base is None or to_target[name] is None else to_target[name] / base,
        }
        for name, c in parsed.items()
    }
    return {"reference": reference, "budget_flops": budget, "target_loss": float(target), "architectures": rows}


def comparison_markdown(result: dict[str, Any]) -> str:
    """compare()'s result as a Markdown table ("not reached" for None) with a line on how it was read."""

    def cell(value: float | None, fmt: str, unit: str = "") -> str:
        return NOT_REACHED if value is None else format(value, fmt) + unit

    ref = result["reference"]
    header = (
        f"| architecture | final FLOPs | best loss | loss at {result['budget_flops']:.3g} FLOPs | "
        f"FLOPs to loss {result['target_loss']:.4f} | compute vs {ref} |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for name, row in result["architectures"].items():
        lines.append(
            f"| {name} | {row['final_flops']:.3g} | {row['best_loss']:.4f} | "
            f"{cell(row['loss_at_budget'], '.4f')} | {cell(row['flops_to_target'], '.3g')} | "
            f"{cell(row['compute_multiplier'], '.2f', '×')} |"
        )
    lines.append("")
    lines.append("Losses are each curve's running minimum (best checkpoint so far), interpolated in log compute.")
    return "\n".join(lines) + "\n"
