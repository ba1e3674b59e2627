"""The comparison's "within 2× AR's loss at the budget?" lines (lmcore/eval/compute_report.py): reached, or the
compute a power law fitted to the architecture's own curve predicts it needs."""

from __future__ import annotations

import numpy as np
import pytest

from lmcore.eval.compute_compare import compare
from lmcore.eval.compute_report import compute_needed, compute_section

BUDGET = 3e13
STEPS = np.linspace(BUDGET / 9, BUDGET, 9)  # nine evaluations, the last at the budget


def law(e: float, a: float, alpha: float) -> list[tuple[float, float]]:
    return [(float(c), e + a * c ** (-alpha)) for c in STEPS]


AR = [(float(c), 0.4 + 1e3 * c ** (-0.3)) for c in STEPS]  # ends near 0.40: 2× is about 0.81


def test_a_curve_above_twice_ar_gets_the_compute_its_fitted_law_predicts():
    e, a, alpha = 0.5, 4e7, 0.55
    curves = {"ar": AR, "diffusion": law(e, a, alpha)}
    result = compare(curves, reference="ar")
    needed = compute_needed(curves, result)["diffusion"]
    target = 2 * AR[-1][1]
    assert needed["target_loss"] == pytest.approx(target)
    assert needed["loss_at_budget"] == pytest.approx(law(e, a, alpha)[-1][1])
    assert not needed["reached"]
    expected = (a / (target - e)) ** (1 / alpha)  # the exact law solved for the target
    assert needed["flops_needed"] == pytest.approx(expected, rel=1e-3)
    assert needed["budget_multiple"] == pytest.approx(expected / BUDGET, rel=1e-3)
    assert needed["budget_multiple"] > 1
    assert (needed["fit"].E, needed["fit"].alpha) == pytest.approx((e, alpha), rel=1e-3)
    text, _ = compute_section(curves, {"ar": "exact", "diffusion": "nelbo_bound"}, floor=0.3)
    line = next(x for x in text.splitlines() if x.startswith("- diffusion:"))
    assert f"{expected:.3g} FLOPs" in line and f"{expected / BUDGET:.2f}× the budget" in line
    assert "2× ar's there is" in line and "not a scaling law" in line


def test_a_curve_within_twice_ar_is_reached_and_not_fitted():
    curves = {"ar": AR, "diffusion": [(c, 1.5 * loss) for c, loss in AR]}
    result = compare(curves, reference="ar")
    needed = compute_needed(curves, result)["diffusion"]
    assert needed["reached"] and "fit" not in needed
    text, _ = compute_section(curves, {"ar": "exact", "diffusion": "nelbo_bound"}, floor=None)
    assert "reached within the budget." in text


def test_a_law_whose_floor_is_above_the_target_never_reaches_it():
    curves = {"ar": AR, "diffusion": law(1.2, 4e7, 0.55)}  # E = 1.2 > 2 × 0.40
    needed = compute_needed(curves, compare(curves, reference="ar"))["diffusion"]
    assert needed["fit"] is not None and needed["fit"].E > needed["target_loss"]
    assert needed["flops_needed"] is None and needed["budget_multiple"] is None
    text, _ = compute_section(curves, {"ar": "exact", "diffusion": "nelbo_bound"}, floor=None)
    assert "never reaches it" in text


def test_too_few_evaluations_to_fit_are_said_not_raised():
    curves = {"ar": AR, "diffusion": [(1e13, 3.0), (BUDGET, 2.0)]}
    needed = compute_needed(curves, compare(curves, reference="ar"))["diffusion"]
    assert needed["fit"] is None and needed["flops_needed"] is None
    assert "at least 3 distinct compute values" in needed["error"]
    text, _ = compute_section(curves, {"ar": "exact", "diffusion": "nelbo_bound"}, floor=None)
    assert "no fit of its curve is possible" in text
