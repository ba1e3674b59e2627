"""Compute scaling laws L(C) = E + A·C^(−α) (Kaplan et al. 2020; Hoffmann et al. 2022, eq. 2 in C alone): fits with
standard errors, the compute-optimal frontier over model sizes, and compute multipliers between architectures.

The fit is nonlinear least squares in L with scipy.optimize.curve_fit (trust-region reflective, bounds
0 ≤ E ≤ min L, A > 0, α ≥ 0); its covariance, s²·(JᵀJ)⁻¹ at the optimum with s² the residual variance, gives
the standard errors. Compute is divided by its geometric mean C₀ inside the fit (L = E + a·(C/C₀)^(−α),
A = a·C₀^α): raw FLOPs (1e15–1e21) raised to −α make the problem too ill-conditioned to solve directly. The start
point comes from a grid over E, each E fitted linearly as log(L − E) = log a − α·log(C/C₀).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from lmcore.errors import ConfigError, DataError
from lmcore.eval.compute_compare import as_curve, loss_at_budget

_GRID = 64  # E values tried for the start point, in [0, min L)


@dataclass(frozen=True)
class PowerLawFit:
    """L(C) = E + A·C^(−α) with standard errors (None with 3 points: no residual degrees of freedom) and the fit's
    quality: R² of L and the RMS residual."""

    E: float
    A: float
    alpha: float
    E_se: float | None
    A_se: float | None
    alpha_se: float | None
    r2: float
    rmse: float
    n: int

    def loss(self, compute: float) -> float:
        """The fitted loss at `compute` FLOPs."""
        return self.E + self.A * compute ** (-self.alpha)

    def compute_for_loss(self, loss: float) -> float | None:
        """The FLOPs at which the law reaches `loss`: (A / (L − E))^(1/α); None when it never does (L ≤ E)."""
        if loss <= self.E or self.alpha <= 0:
            return None
        return math.exp((math.log(self.A) - math.log(loss - self.E)) / self.alpha)


def _law(x: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
    return e + a * x ** (-alpha)


def _start(x: np.ndarray, y: np.ndarray, e_min: float) -> tuple[float, float, float]:
    """(E, a, α) of the best linear fit of log(L − E) on log x over a grid of E in [e_min, min L)."""
    best: tuple[float, tuple[float, float, float]] | None = None
    for e in np.linspace(e_min, y.min(), _GRID, endpoint=False):
        slope, intercept = np.polyfit(np.log(x), np.log(y - e), 1)
        params = (float(e), math.exp(intercept), max(-float(slope), 0.0))
        sse = float(np.sum((y - _law(x, *params)) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    return best[1]


def fit_power_law(
    compute: Sequence[float], loss: Sequence[float], *, name: str = "points", e_min: float = 0.0
) -> PowerLawFit:
    """Fit L = E + A·C^(−α) to (compute, loss) points (at least 3 distinct compute values, positive losses).

    `e_min` bounds E from below: for losses on the NLL scale the corpus' entropy floor, which no model's NLL (nor a
    bound on it) can go below, so the law cannot predict losses under it."""
    c, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.ndim != 1 or c.shape != y.shape:
        raise DataError(f"{name}: compute and loss must be two sequences of one length, got {c.shape} and {y.shape}")
    if not (np.all(np.isfinite(c)) and np.all(c > 0) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise DataError(f"{name}: compute and loss must be finite and positive")
    if np.unique(c).size < 3:
        raise DataError(
            f"{name}: a power law with an offset needs at least 3 distinct compute values, got {np.unique(c).size}"
        )
    if not 0.0 <= e_min < y.min():
        raise DataError(f"{name}: the lower bound of E ({e_min}) must be ≥ 0 and below every loss (min {y.min()})")
    c_ref = math.exp(float(np.mean(np.log(c))))
    x = c / c_ref
    p0 = _start(x, y, e_min)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # 3 points: no residual variance, covariance infinite
        (e, a, alpha), cov = curve_fit(
            _law,
            x,
            y,
            p0=p0,
            bounds=([e_min, 1e-300, 0.0], [y.min(), np.inf, np.inf]),
            method="trf",
            x_scale="jac",
            max_nfev=10_000,
        )
    scale = c_ref**alpha
    se: list[float | None] = [None, None, None]
    if y.size > 3:  # residual degrees of freedom left for s²
        # (E, a, α) → (E, A = a·C₀^α, α): the delta method with the Jacobian of that map.
        jac = np.array([[1.0, 0.0, 0.0], [0.0, scale, a * scale * math.log(c_ref)], [0.0, 0.0, 1.0]])
        se = [float(math.sqrt(v)) if math.isfinite(v) and v >= 0 else None for v in np.diag(jac @ cov @ jac.T)]
    residuals = y - _law(x, e, a, alpha)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residuals**2)) / total if total > 0 else 1.0
    return PowerLawFit(
        E=float(e),
        A=float(a * scale),
        alpha=float(alpha),
        E_se=se[0],
        A_se=se[1],
        alpha_se=se[2],
        r2=r2,
        rmse=float(np.sqrt(np.mean(residuals**2))),
        n=int(y.size),
    )


class FrontierPoint(NamedTuple):
    """One point of the compute-optimal frontier: the lowest loss at `compute` and the run that reaches it."""

    compute: float
    loss: float
    run: str


def log_grid(lo: float, hi: float, per_decade: int) -> list[float]:
    """Compute values from `lo` to `hi` (both included), evenly spaced in log compute, `per_decade` per decade."""
    if not 0 < lo <= hi or per_decade < 1:
        raise ConfigError(f"log grid: need 0 < lo ≤ hi and per_decade ≥ 1, got {lo}, {hi}, {per_decade}")
    n = max(2, math.ceil(math.log10(hi / lo) * per_decade) + 1) if hi > lo else 1
    return [float(v) for v in np.geomspace(lo, hi, n)]


def frontier(
    runs: Mapping[str, Iterable[tuple[float, float]]], at: Sequence[float] | None = None
) -> list[FrontierPoint]:
    """The compute-optimal frontier over runs (model sizes): the lower envelope of their loss-vs-compute curves.

    At every compute where some run was evaluated (or at each value of `at`), the lowest loss reachable with at
    most that compute: over the runs whose curves span it, each read through its running minimum and interpolated
    in log compute (lmcore/eval/compute_compare.py), and the runs that ended before it with their best loss (a
    model trained on less compute is still available), so the frontier never rises. Values of `at` before every
    run's first evaluation are left out.
    """
    if not runs:
        raise DataError("frontier: no runs")
    curves = {name: as_curve(points, name) for name, points in runs.items()}
    grid = sorted({float(v) for curve in curves.values() for v in curve.compute}) if at is None else sorted(at)
    points = []
    for c in grid:
        losses = [
            (n, float(curve.best_loss[-1]) if c > curve.compute[-1] else loss_at_budget(curve, c))
            for n, curve in curves.items()
            if c >= curve.compute[0]
        ]
        if losses:
            run, loss = min(losses, key=lambda item: item[1])
            points.append(FrontierPoint(c, loss, run))
    return points


def fit_frontier(
    runs: Mapping[str, Iterable[tuple[float, float]]], per_decade: int | None = None, e_min: float = 0.0
) -> tuple[list[FrontierPoint], PowerLawFit]:
    """The compute-optimal frontier of `runs` and the power law fitted to it.

    With `per_decade`, the frontier is read at that many points per decade of compute between its first and last
    evaluation, so that the densely evaluated small models (hundreds of cheap evaluations) do not outweigh the
    large ones in the least-squares fit; those are the points returned and fitted."""
    points = frontier(runs)
    if per_decade is not None:
        points = frontier(runs, at=log_grid(points[0].compute, points[-1].compute, per_decade))
    return points, fit_power_law([p.compute for p in points], [p.loss for p in points], name="frontier", e_min=e_min)


def compute_multipliers(
    fits: Mapping[str, PowerLawFit], losses: Sequence[float], reference: str = "ar"
) -> dict[str, list[float | None]]:
    """For each architecture and target loss: the compute its law needs to reach that loss over `reference`'s;
    None where either law never reaches it. Meaningful between losses on one scale (AR's NLL, diffusion's NELBO
    bound), not with SDD's denoising cross-entropy."""
    if reference not in fits:
        raise ConfigError(
            f"compute multipliers: no fit for the reference architecture '{reference}' "
            f"(fits: {', '.join(fits) or 'none'})"
        )
    out: dict[str, list[float | None]] = {}
    for name, fit in fits.items():
        row: list[float | None] = []
        for loss in losses:
            mine, base = fit.compute_for_loss(loss), fits[reference].compute_for_loss(loss)
            row.append(None if mine is None or base is None else mine / base)
        out[name] = row
    return out
