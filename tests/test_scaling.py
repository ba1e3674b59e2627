"""Scaling-law fits, the compute-optimal frontier, compute multipliers (lmcore/eval/scaling.py) and equal-compute
comparisons of validation curves (lmcore/eval/compute_compare.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmcore.errors import ConfigError, DataError
from lmcore.eval.compute_compare import (
    NOT_REACHED,
    as_curve,
    compare,
    comparison_markdown,
    compute_to_reach,
    loss_at_budget,
)
from lmcore.eval.scaling import PowerLawFit, compute_multipliers, fit_frontier, fit_power_law, frontier, log_grid

TRUE = {"E": 1.8, "A": 2.0 * 1e15**0.15, "alpha": 0.15}  # L(1e15) = 3.8, L(1e20) ≈ 2.16
COMPUTE = np.logspace(15, 20, 12)


def law(c, E=TRUE["E"], A=TRUE["A"], alpha=TRUE["alpha"]):
    return E + A * np.asarray(c, dtype=float) ** (-alpha)


def noisy(seed: int, sigma: float = 0.01) -> np.ndarray:
    return law(COMPUTE) + np.random.default_rng(seed).normal(0.0, sigma, COMPUTE.size)


def test_fit_recovers_exact_law():
    fit = fit_power_law(COMPUTE, law(COMPUTE))
    assert fit.E == pytest.approx(TRUE["E"], rel=1e-6)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=1e-6)
    assert fit.A == pytest.approx(TRUE["A"], rel=1e-5)
    assert fit.r2 == pytest.approx(1.0) and fit.rmse < 1e-8 and fit.n == 12


def test_fit_recovers_noisy_law_within_its_standard_errors():
    fit = fit_power_law(COMPUTE, noisy(seed=0))
    for name in ("E", "A", "alpha"):
        estimate, se = getattr(fit, name), getattr(fit, f"{name}_se")
        assert se is not None and se > 0
        assert abs(estimate - TRUE[name]) < 3 * se, (name, estimate, se)
    assert abs(fit.alpha - TRUE["alpha"]) < 0.05 and abs(fit.E - TRUE["E"]) < 0.2
    assert fit.r2 > 0.99 and 0.004 < fit.rmse < 0.02  # residuals at the noise level (σ = 0.01)


def test_standard_errors_are_calibrated():
    """Over 200 noisy draws ±1 SE covers the truth about 68 % of the time and ±2 SE about 95 % (a little less with
    9 residual degrees of freedom): the standard errors are neither too narrow nor too wide."""
    fits = [fit_power_law(COMPUTE, noisy(seed)) for seed in range(200)]
    for name in ("E", "A", "alpha"):
        error = np.array([abs(getattr(f, name) - TRUE[name]) / getattr(f, f"{name}_se") for f in fits])
        assert 0.55 <= np.mean(error <= 1) <= 0.80, (name, np.mean(error <= 1))
        assert 0.85 <= np.mean(error <= 2) <= 0.99, (name, np.mean(error <= 2))


def test_lower_bound_of_e_holds_the_fit_above_the_floor():
    # A law whose offset is below the floor: bounded at the floor, E stops there and the loss stays above it.
    free = fit_power_law(COMPUTE, law(COMPUTE))
    bounded = fit_power_law(COMPUTE, law(COMPUTE), e_min=2.0)
    assert free.E == pytest.approx(1.8, rel=1e-6) and bounded.E == pytest.approx(2.0)
    assert bounded.loss(1e30) > 2.0 and bounded.r2 < free.r2
    with pytest.raises(DataError, match="lower bound of E"):
        fit_power_law(COMPUTE, law(COMPUTE), e_min=5.0)


def test_three_points_fit_without_standard_errors_and_bad_points_are_errors():
    fit = fit_power_law([1e15, 1e16, 1e17], law([1e15, 1e16, 1e17]))
    assert fit.E_se is None and fit.A_se is None and fit.alpha_se is None
    assert fit.loss(1e16) == pytest.approx(law(1e16), rel=1e-4)
    with pytest.raises(DataError, match="at least 3 distinct compute values, got 2"):
        fit_power_law([1e15, 1e15, 1e16], [3.0, 3.1, 2.9])
    with pytest.raises(DataError, match="finite and positive"):
        fit_power_law([1e15, 1e16, math.inf], [3.0, 2.9, 2.8])
    with pytest.raises(DataError, match="one length"):
        fit_power_law([1e15, 1e16, 1e17], [3.0, 2.9])


def test_compute_for_loss_inverts_the_law():
    fit = PowerLawFit(E=2.0, A=100.0, alpha=0.2, E_se=None, A_se=None, alpha_se=None, r2=1.0, rmse=0.0, n=5)
    for c in (1e12, 1e18):
        assert fit.compute_for_loss(fit.loss(c)) == pytest.approx(c, rel=1e-9)
    assert fit.compute_for_loss(2.0) is None and fit.compute_for_loss(1.5) is None  # at or below E: never


def test_compute_multiplier_of_a_law_shifted_in_compute():
    ar = PowerLawFit(E=2.0, A=100.0, alpha=0.2, E_se=None, A_se=None, alpha_se=None, r2=1.0, rmse=0.0, n=5)
    # L_x(C) = L_ar(C / 4): x needs 4× AR's compute for every loss, so A_x = A·4^α.
    x = PowerLawFit(E=2.0, A=100.0 * 4**0.2, alpha=0.2, E_se=None, A_se=None, alpha_se=None, r2=1.0, rmse=0.0, n=5)
    out = compute_multipliers({"ar": ar, "x": x}, [3.0, 2.5, 1.9])
    assert out["ar"][:2] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert out["x"][:2] == [pytest.approx(4.0), pytest.approx(4.0)]
    assert out["x"][2] is None  # 1.9 < E: neither law reaches it
    with pytest.raises(ConfigError, match="reference architecture 'ar'"):
        compute_multipliers({"x": x}, [3.0])


def test_frontier_is_the_lower_envelope_of_the_runs():
    small = [(1e15, 4.0), (1e16, 3.0), (1e17, 2.8), (1e18, 2.75)]  # learns fast, plateaus high
    big = [(1e16, 3.6), (1e17, 2.6), (1e18, 2.2), (1e19, 2.0)]  # slower start, lower end
    points = frontier({"small": small, "big": big})
    assert [p.compute for p in points] == [1e15, 1e16, 1e17, 1e18, 1e19]
    assert [p.run for p in points] == ["small", "small", "big", "big", "big"]
    assert [p.loss for p in points] == [4.0, 3.0, 2.6, 2.2, 2.0]
    for run in (small, big):
        curve = as_curve(run, "run")
        for p in points:
            loss = loss_at_budget(curve, p.compute)
            assert loss is None or p.loss <= loss


def test_fit_on_the_frontier_recovers_the_envelope_law():
    # Each model size follows the law up to its compute limit, then plateaus (a bigger run is needed to go on):
    # the frontier is the law itself at every evaluation.
    grid = np.logspace(15, 20, 21)
    runs = {
        f"size{i}": [(c, float(law(min(c, grid[min(4 * i + 4, 20)])))) for c in grid[4 * i : 4 * i + 9]]
        for i in range(5)
    }
    points, fit = fit_frontier(runs)
    assert [p.loss for p in points] == pytest.approx(list(law([p.compute for p in points])))
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=1e-4) and fit.E == pytest.approx(TRUE["E"], rel=1e-4)


def test_standard_errors_grow_with_the_noise():
    """Same draws scaled: 4× the noise gives ~4× the standard errors (s² is the residual variance), and more points
    at the same noise give smaller ones."""
    rng = np.random.default_rng(3)
    unit = rng.normal(0.0, 1.0, COMPUTE.size)
    low, high = (fit_power_law(COMPUTE, law(COMPUTE) + sigma * unit) for sigma in (0.0005, 0.002))
    for name in ("E_se", "A_se", "alpha_se"):
        assert getattr(high, name) / getattr(low, name) == pytest.approx(4.0, rel=0.1), name
    dense = np.logspace(15, 20, 48)
    many = fit_power_law(dense, law(dense) + rng.normal(0.0, 0.002, dense.size))
    assert many.alpha_se < high.alpha_se


def test_log_grid_spacing():
    grid = log_grid(1e10, 1e13, 4)
    assert len(grid) == 13 and grid[0] == pytest.approx(1e10) and grid[-1] == pytest.approx(1e13)
    assert np.allclose(np.diff(np.log10(grid)), 0.25)
    assert log_grid(5.0, 5.0, 8) == [5.0]
    with pytest.raises(ConfigError, match="per_decade"):
        log_grid(1e12, 1e10, 4)


def test_frontier_read_on_a_grid_leaves_out_what_no_run_spans():
    small = [(1e15, 4.0), (1e16, 3.0)]
    big = [(1e16, 3.6), (1e18, 2.2)]
    points = frontier({"small": small, "big": big}, at=[1e14, 10**15.5, 1e17, 1e19])
    assert [p.compute for p in points] == [10**15.5, 1e17, 1e19]  # 1e14: before every run's first evaluation
    assert points[0] == (10**15.5, pytest.approx(3.5), "small")
    assert points[1] == (1e17, pytest.approx(2.9), "big")
    assert points[2] == (1e19, 2.2, "big")  # after every run: the best model trained on less compute


def test_frontier_never_rises_when_the_best_run_ends_first():
    # The best run ends at 1.60e12; a worse one overshoots to 1.61e12. With at most 1.61e12 FLOPs the best run is
    # still available, so the frontier stays at its loss instead of jumping to the worse run's.
    best = [(1e11, 3.0), (1.2e12, 0.69), (1.60e12, 0.67)]
    worse = [(4e11, 2.0), (1.61e12, 0.84)]
    points = frontier({"best": best, "worse": worse})
    assert [p.loss for p in points] == sorted((p.loss for p in points), reverse=True)
    assert points[-1] == (1.61e12, 0.67, "best")


def test_thinned_frontier_weighs_decades_equally_and_recovers_the_law():
    # The small model is evaluated 40 times per decade, the large one 2 times: read at 6 per decade, every decade
    # contributes alike, and the law on the envelope is still recovered exactly.
    small = [(c, float(law(c))) for c in np.logspace(15, 17, 81)]
    big = [(c, float(law(c))) for c in np.logspace(17, 20, 7)]
    points, fit = fit_frontier({"small": small, "big": big}, per_decade=6)
    assert len(points) == 31 and np.allclose(np.diff(np.log10([p.compute for p in points])), 1 / 6)
    assert {p.run for p in points if p.compute > 1.01e17} == {"big"}
    # Between the large model's sparse evaluations the envelope is interpolated linearly in log compute: close to
    # the law, not on it.
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=5e-3) and fit.E == pytest.approx(TRUE["E"], rel=5e-3)


# ------------------------------------------------------------------ equal-compute comparison of curves
def test_loss_at_budget_interpolates_in_log_compute():
    curve = as_curve([(1e3, 4.0), (1e5, 2.0)], "ar")
    assert loss_at_budget(curve, 1e4) == pytest.approx(3.0)  # halfway in log compute
    assert loss_at_budget(curve, 1e5) == 2.0
    assert loss_at_budget(curve, 2e5) is None  # beyond the curve: not reached
    assert loss_at_budget(curve, 1e2) is None  # before its first evaluation: not measured


def test_non_monotone_curve_is_read_through_its_running_minimum():
    curve = as_curve([(1000, 2.0), (1, 5.0), (100, 4.0), (10, 3.0)], "noisy")  # any order; 4.0 is a bump
    assert list(curve.best_loss) == [5.0, 3.0, 3.0, 2.0]
    assert loss_at_budget(curve, 100) == 3.0  # the best checkpoint so far, not the bump
    assert loss_at_budget(curve, 10**2.5) == pytest.approx(2.5)
    assert compute_to_reach(curve, 3.5) == pytest.approx(10**0.75)  # (5 − 3.5)/(5 − 3) of the way from 1 to 10
    assert compute_to_reach(curve, 2.5) == pytest.approx(10**2.5)  # the crossing after the bump
    assert compute_to_reach(curve, 5.0) == 1.0  # met at the first evaluation
    assert compute_to_reach(curve, 1.9) is None  # never reached


def test_compare_architectures_at_equal_compute():
    curves = {
        "ar": [(1e15, 4.0), (1e16, 3.0), (1e17, 2.5)],
        "diffusion": [(1e15, 4.5), (1e16, 3.5), (1e17, 3.0), (1e18, 2.5)],
    }
    result = compare(curves)
    assert result["budget_flops"] == 1e17  # the largest budget both reach
    assert result["target_loss"] == 2.5  # the lowest loss both reach
    ar, diff = result["architectures"]["ar"], result["architectures"]["diffusion"]
    assert (ar["loss_at_budget"], diff["loss_at_budget"]) == (2.5, 3.0)
    assert (ar["flops_to_target"], diff["flops_to_target"]) == (pytest.approx(1e17), pytest.approx(1e18))
    assert diff["compute_multiplier"] == pytest.approx(10.0) and ar["compute_multiplier"] == pytest.approx(1.0)
    halfway = compare(curves, target=3.25)["architectures"]  # interpolated between evaluations in log compute
    assert halfway["diffusion"]["compute_multiplier"] == pytest.approx(10**16.5 / 10**15.75)

    later = compare(curves, budget=1e18, target=2.4)
    assert later["architectures"]["ar"]["loss_at_budget"] is None  # AR's curve ends at 1e17
    assert later["architectures"]["diffusion"]["loss_at_budget"] == 2.5
    assert all(
        row["flops_to_target"] is None and row["compute_multiplier"] is None for row in later["architectures"].values()
    )
    table = comparison_markdown(later)
    assert table.count(NOT_REACHED) == 5 and "| diffusion | 1e+18 | 2.5000 | 2.5000 |" in table


def test_bad_curves_and_parameters_are_one_line_errors():
    with pytest.raises(DataError, match="sdd: point 1 has training FLOPs -1"):
        as_curve([(1e15, 3.0), (-1, 2.0)], "sdd")
    with pytest.raises(DataError, match="ar: point 0 has val loss nan"):
        as_curve([(1e15, math.nan)], "ar")
    with pytest.raises(DataError, match="ar: no .* points"):
        as_curve([], "ar")
    with pytest.raises(DataError, match="no curve for the reference architecture 'ar'"):
        compare({"sdd": [(1e15, 3.0)]})
    with pytest.raises(ConfigError, match="budget must be a finite positive number"):
        loss_at_budget(as_curve([(1e15, 3.0)], "ar"), 0)
