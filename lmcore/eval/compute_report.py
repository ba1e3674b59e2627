"""The equal-compute section of the comparison: each architecture's validation curve against training FLOPs
(read from its run's history.jsonl), the table of lmcore/eval/compute_compare.py, and a chart with the corpus'
entropy floor.

Only losses on one scale are compared (AR's exact NLL and diffusion's NELBO, an upper bound on it); SDD's
denoising cross-entropy is drawn on the chart for its shape but left out of the table, and the text says so.

Where an architecture's loss at the budget is still above a multiple of AR's (`NEED_FACTOR`, 2×), the section
says how much more compute it would need, from L(C) = E + A·C^(−α) fitted to its own validation curve
(lmcore/eval/scaling.py) and solved for that loss. One run's curve under one cosine schedule is not a
compute-optimal frontier (pipelines/scaling/ fits those), so the figure is an extrapolation and is labelled so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmcore.errors import DataError
from lmcore.eval.compute_compare import as_curve, compare, comparison_markdown
from lmcore.eval.scaling import fit_power_law
from lmcore.files import atomic_write
from lmcore.train.tracking import read_history

COMPARABLE_KINDS = ("exact", "nelbo_bound")  # val/loss kinds that bound or equal the same NLL
NEED_FACTOR = 2.0  # the target: within 2× AR's loss at the shared budget (issue 9, deliverable 7)


def val_curve(history: Path) -> list[tuple[float, float]]:
    """(training FLOPs, val/loss) at each validation of a run, from its history.jsonl (val/flops is logged there)."""
    points = []
    for _, record in read_history(Path(history)):
        metrics = record.get("metrics") or {}
        if "val/loss" in metrics and metrics.get("val/flops"):
            points.append((float(metrics["val/flops"]), float(metrics["val/loss"])))
    return points


def compute_needed(
    curves: dict[str, list[tuple[float, float]]], result: dict[str, Any], factor: float = NEED_FACTOR
) -> dict[str, dict[str, Any]]:
    """For each compared architecture but the reference: whether its loss at compare()'s budget is within `factor`
    × the reference's there, and if not, the FLOPs at which L(C) = E + A·C^(−α), fitted to its own curve (running
    minimum, every evaluation), reaches that loss, also as a multiple of the budget. `flops_needed` is None when
    the fitted floor E is at or above the target (the law never gets there) or when no fit is possible (`error`)."""
    budget = result["budget_flops"]
    ref_loss = result["architectures"][result["reference"]]["loss_at_budget"]
    out: dict[str, dict[str, Any]] = {}
    if ref_loss is None:
        return out
    target = factor * ref_loss
    for name, row in result["architectures"].items():
        if name == result["reference"] or row["loss_at_budget"] is None:
            continue
        entry: dict[str, Any] = {"loss_at_budget": row["loss_at_budget"], "target_loss": target}
        entry["reached"] = row["loss_at_budget"] <= target
        if not entry["reached"]:
            curve = as_curve(curves[name], name)
            try:
                fit = fit_power_law(curve.compute, curve.best_loss, name=f"{name} validation curve")
            except (DataError, RuntimeError) as e:  # too few evaluations, or least squares did not converge
                entry.update(fit=None, flops_needed=None, budget_multiple=None, error=str(e))
            else:
                need = fit.compute_for_loss(target)
                entry.update(
                    fit=fit, flops_needed=need, budget_multiple=None if need is None else need / budget, error=None
                )
        out[name] = entry
    return out


def needed_markdown(needed: dict[str, dict[str, Any]], result: dict[str, Any], factor: float = NEED_FACTOR) -> str:
    """compute_needed()'s result as one line per architecture."""
    ref, budget = result["reference"], result["budget_flops"]
    lines = []
    for name, e in needed.items():
        head = (
            f"- {name}: loss {e['loss_at_budget']:.4f} at {budget:.3g} FLOPs; {factor:g}× {ref}'s there is "
            f"{e['target_loss']:.4f}"
        )
        if e["reached"]:
            lines.append(f"{head}: reached within the budget.")
            continue
        fit = e["fit"]
        if fit is None:
            lines.append(f"{head}: not reached, and no fit of its curve is possible ({e['error']}).")
            continue
        se = "" if fit.alpha_se is None else f" ± {fit.alpha_se:.2g}"
        law = (
            f"L(C) = E + A·C^(−α) fitted to its {fit.n} evaluations (E = {fit.E:.3g}, A = {fit.A:.3g}, "
            f"α = {fit.alpha:.3g}{se}, R² = {fit.r2:.3f})"
        )
        if e["flops_needed"] is None:
            lines.append(f"{head}: not reached; {law} never reaches it (its floor E is above the target).")
        else:
            lines.append(
                f"{head}: not reached; {law} predicts it at {e['flops_needed']:.3g} FLOPs, "
                f"{e['budget_multiple']:.2f}× the budget (an extrapolation of one run's curve, not a scaling law)."
            )
    return "\n".join(lines)


def compute_section(
    curves: dict[str, list[tuple[float, float]]], kinds: dict[str, str], floor: float | None
) -> tuple[str, dict[str, Any] | None]:
    """Markdown for the equal-compute comparison, and compare()'s result (None when there is nothing to compare)."""
    comparable = {name: c for name, c in curves.items() if c and kinds.get(name) in COMPARABLE_KINDS}
    lines = ["## At equal training compute", ""]
    left_out = sorted(name for name in curves if name not in comparable)
    result = None
    if "ar" in comparable and len(comparable) > 1:
        result = compare(comparable, reference="ar")
        lines.append(comparison_markdown(result))
        lines.append(
            "Budget: the largest training compute every compared run reached; target: the lowest validation "
            "loss every compared run reached. Compute multiples are relative to AR (published: masked "
            "diffusion needs about 16× AR's compute to match its loss, Nie et al. 2024)."
        )
        needed = compute_needed(comparable, result)
        if needed:
            lines += ["", f"Within {NEED_FACTOR:g}× {result['reference']}'s loss at the budget?", ""]
            lines.append(needed_markdown(needed, result))
            lines.append("")
    else:
        lines.append("Not enough comparable curves (AR and at least one of diffusion) with training FLOPs logged.")
    if left_out:
        lines.append(
            f"Left out of the table: {', '.join(left_out)} (validation loss not on the NLL scale, or no "
            f"curve); drawn on the chart for its shape only."
        )
    if floor is not None:
        lines.append(f"Corpus entropy floor: {floor:.4f} nats/token (no model's NLL can go below it).")
    return "\n".join(lines) + "\n", result


def plot_loss_vs_flops(
    curves: dict[str, list[tuple[float, float]]], kinds: dict[str, str], floor: float | None, path: Path
) -> None:
    """Validation loss against training FLOPs (log x) for every architecture on one chart, with the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            style = "-" if kinds.get(name) in COMPARABLE_KINDS else ":"
            ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{name} ({kinds.get(name, '?')})")
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="corpus entropy floor")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Validation loss at equal training compute")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
