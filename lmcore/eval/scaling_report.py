"""The scaling study's report (stages/fit_scaling.py): every run of the grid read from its history.jsonl, the
compute-optimal frontier and the fitted law L(C) = E + A·C^(−α) per architecture (lmcore/eval/scaling.py), the
compute multipliers relative to AR beside the published figures, a metrics JSON of numbers, a Markdown report and
one chart.

Figures outside an architecture's measured frontier (its first to last evaluated compute) come from the law alone
and are labelled extrapolation. Multipliers compare losses on one scale: AR's exact NLL and diffusion's NELBO (an
upper bound on the NLL). SDD's val/loss is a denoising cross-entropy, so its "multiplier" compares numbers on
different scales; it is reported because it is asked for, labelled as such.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcore.config import ScalingConfig
from lmcore.errors import DataError
from lmcore.eval.compute_compare import as_curve, compute_to_reach
from lmcore.eval.compute_report import COMPARABLE_KINDS, val_curve
from lmcore.eval.scaling import FrontierPoint, PowerLawFit, fit_frontier
from lmcore.files import atomic_write, write_text

REFERENCE = "ar"
# Published compute multipliers at equal loss, relative to AR. Nie et al. (2024), "Scaling up Masked Diffusion
# Models on Text" (arXiv:2410.18514), fit scaling laws to MDMs and ARMs on SlimPajama: an MDM needs about 16× the
# compute of an ARM to reach the same validation loss. SDD has no published scaling study.
PUBLISHED = {
    "diffusion": (16.0, "≈16× (Nie et al. 2024, Scaling up Masked Diffusion Models on Text, arXiv:2410.18514)"),
    "sdd": (None, "no published figure"),
}


def run_name(arch: str, size: str, budget: str) -> str:
    """The folder and DVC matrix name of one run: `<arch>-<size>-<budget as written>` (a model file by its stem)."""
    return f"{arch}-{Path(size).stem}-{budget}"


@dataclass(frozen=True)
class ArchScaling:
    """One architecture's runs (name → (training FLOPs, val loss) points), frontier and fitted law."""

    name: str
    kind: str
    runs: dict[str, list[tuple[float, float]]]
    points: list[FrontierPoint]
    fit: PowerLawFit

    @property
    def measured(self) -> tuple[float, float]:
        """The compute range of the fitted frontier points: the law is a measurement inside it only."""
        return self.points[0].compute, self.points[-1].compute


def read_run(runs_dir: Path, metrics_dir: Path, name: str) -> tuple[list[tuple[float, float]], dict[str, Any]]:
    """A run's validation curve (its history.jsonl) and its train metrics JSON (metric_kind, entropy floor)."""
    history = runs_dir / name / "history.jsonl"
    if not history.is_file():
        raise DataError(f"{history}: missing; the grid's run {name} has not trained (dvc repro trains it)")
    curve = val_curve(history)
    if not curve:
        raise DataError(f"{history}: no validation with training FLOPs (val/loss and val/flops)")
    path = metrics_dir / f"{name}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the run's metrics ({e.__class__.__name__}: {e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("metric_kind"), str):
        raise DataError(f"{path}: no metric_kind; not a train metrics file")
    return curve, info


def analyse(runs_dir: Path, metrics_dir: Path, grid: ScalingConfig) -> tuple[dict[str, ArchScaling], float | None]:
    """Every architecture's frontier and fit, and the corpus entropy floor (None when the corpus has none)."""
    out, floor = {}, None
    for arch in grid.arch_list():
        runs, kinds = {}, set()
        for size in grid.size_list():
            for budget in grid.budget_list():
                name = run_name(arch, size, budget)
                runs[name], info = read_run(runs_dir, metrics_dir, name)
                kinds.add(info["metric_kind"])
                floor = info.get("entropy_floor_nats_per_token", floor)
        if len(kinds) != 1:
            raise DataError(f"{arch}: its runs report different loss kinds {sorted(kinds)}; they cannot share a fit")
        kind = kinds.pop()
        # An NLL (or a bound on it) cannot go below the corpus' entropy floor: neither can the law's E.
        e_min = floor if floor is not None and kind in COMPARABLE_KINDS else 0.0
        points, fit = fit_frontier(runs, per_decade=grid.per_decade, e_min=e_min)
        out[arch] = ArchScaling(arch, kind, runs, points, fit)
    return out, floor


def multipliers(results: dict[str, ArchScaling]) -> dict[str, dict[str, float | None]]:
    """Each architecture's compute to reach a loss over AR's, at the lowest loss both frontiers reach.

    `measured`: read from the two frontiers (interpolated in log compute); `fitted`: from the two laws at the
    same loss. `ar_at_first` is 1 when AR's frontier already had that loss at its first point, where the measured
    figure is a lower bound (nothing earlier was measured)."""
    if REFERENCE not in results:
        return {}
    ref = results[REFERENCE]
    ref_curve = as_curve([(p.compute, p.loss) for p in ref.points], REFERENCE)
    out = {}
    for name, res in results.items():
        if name == REFERENCE:
            continue
        curve = as_curve([(p.compute, p.loss) for p in res.points], name)
        target = max(float(ref_curve.best_loss[-1]), float(curve.best_loss[-1]))
        mine, base = compute_to_reach(curve, target), compute_to_reach(ref_curve, target)
        fit_mine, fit_base = res.fit.compute_for_loss(target), ref.fit.compute_for_loss(target)
        out[name] = {
            "loss": target,
            "flops": mine,
            "ar_flops": base,
            "measured": None if mine is None or base is None else mine / base,
            "fitted": None if fit_mine is None or fit_base is None else fit_mine / fit_base,
            "ar_at_first": float(base is not None and base <= ref_curve.compute[0]),
        }
    return out


def metrics(results: dict[str, ArchScaling], mult: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """The metrics JSON: numbers only (null where a law never reaches a loss or a standard error is undefined)."""
    out: dict[str, Any] = {}
    for name, res in results.items():
        f = res.fit
        lo, hi = res.measured
        out[name] = {
            "E": f.E,
            "E_se": f.E_se,
            "A": f.A,
            "A_se": f.A_se,
            "alpha": f.alpha,
            "alpha_se": f.alpha_se,
            "r2": f.r2,
            "rmse": f.rmse,
            "points": f.n,
            "runs": len(res.runs),
            "flops_min": lo,
            "flops_max": hi,
            "best_loss": min(p.loss for p in res.points),
        }
    for name, row in mult.items():
        published = PUBLISHED.get(name, (None, ""))[0]
        out[name]["multiplier_vs_ar"] = {**row, "published": published}
    return out


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "never reached" if value is None else format(value, fmt) + suffix


def _pm(value: float, se: float | None, fmt: str) -> str:
    return format(value, fmt) + ("" if se is None else " ± " + format(se, fmt))


def report(results: dict[str, ArchScaling], mult: dict[str, dict[str, float | None]], floor: float | None) -> str:
    """The Markdown report: the fits, the frontier's runs, the multipliers beside the published figures."""
    lines = [
        "# Scaling study",
        "",
        "Fitted on each architecture's compute-optimal frontier (the lower envelope of its runs' validation curves "
        "over sizes and budgets): L(C) = E + A·C^(−α), C in training FLOPs, loss in nats/token. "
        "± is one standard error from the fit's covariance (scipy curve_fit). For losses on the NLL scale E is "
        "bounded below by the corpus entropy floor (no NLL, nor a bound on it, goes below it).",
        "",
        "| architecture | loss kind | runs | frontier points | measured FLOPs | E | A | α | R² | RMSE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        f, (lo, hi) = res.fit, res.measured
        lines.append(
            f"| {name} | {res.kind} | {len(res.runs)} | {f.n} | {lo:.3g} – {hi:.3g} | {_pm(f.E, f.E_se, '.4f')} | "
            f"{_pm(f.A, f.A_se, '.4g')} | {_pm(f.alpha, f.alpha_se, '.4f')} | {f.r2:.4f} | {f.rmse:.4f} |"
        )
    lines += ["", "Which run is on the frontier (share of its points):", ""]
    for name, res in results.items():
        counts: dict[str, int] = {}
        for p in res.points:
            counts[p.run] = counts.get(p.run, 0) + 1
        lines.append(f"- {name}: " + ", ".join(f"{run} {n}/{len(res.points)}" for run, n in counts.items()))
    lines += [
        "",
        "## Compute multipliers relative to AR",
        "",
        "At the lowest loss both frontiers reach: the compute each needs, measured on the frontiers and from the "
        "fitted laws (inside the measured range both are measurements).",
        "",
        "| architecture | at loss | its FLOPs | AR's FLOPs | measured | fitted | published |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in mult.items():
        note = " (AR met it at its first point: a lower bound)" if row["ar_at_first"] else ""
        lines.append(
            f"| {name} | {row['loss']:.4f} | {_num(row['flops'], '.3g')} | {_num(row['ar_flops'], '.3g')} | "
            f"{_num(row['measured'], '.2f', '×')}{note} | {_num(row['fitted'], '.2f', '×')} | "
            f"{PUBLISHED.get(name, (None, 'none'))[1]} |"
        )
    apart = [name for name in mult if results[name].kind not in COMPARABLE_KINDS]
    if apart:
        lines.append(
            f"\nNot like for like: {', '.join(apart)} (val/loss {', '.join(results[n].kind for n in apart)}, not "
            "the NLL or a bound on it), so its multiplier compares loss values on different scales (README, Metrics)."
        )
    lines += ["", "## Extrapolation", ""]
    ref = results.get(REFERENCE)
    for name, res in results.items():
        lo, hi = res.measured
        far = 100 * hi
        lines.append(
            f"- {name}: measured {lo:.3g} – {hi:.3g} FLOPs; the law predicts {res.fit.loss(far):.4f} at "
            f"{far:.3g} FLOPs (extrapolation, 100× beyond the measured range)"
            + (f", and an irreducible loss E = {res.fit.E:.4f}" if res.fit.E_se is not None else "")
            + "."
        )
    if ref is not None:
        target = ref.fit.loss(100 * ref.measured[1])
        for name, res in results.items():
            if name == REFERENCE:
                continue
            mine, base = res.fit.compute_for_loss(target), ref.fit.compute_for_loss(target)
            ratio = _num(None if mine is None or base is None else mine / base, ".2f", "×")
            lines.append(
                f"- {name} vs AR at loss {target:.4f} (AR's law 100× beyond its range): {ratio} (extrapolation)."
            )
    if floor is not None:
        lines.append(f"\nCorpus entropy floor: {floor:.4f} nats/token; no model's NLL can go below it.")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, ArchScaling], floor: float | None, path: Path) -> None:
    """Every run (thin lines), the frontier points (markers) and the fitted law (solid over the measured range,
    dashed where extrapolated) per architecture on one log-x chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, res) in enumerate(results.items()):
        color = f"C{i}"
        for points in res.runs.values():
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
        ax.plot([p.compute for p in res.points], [p.loss for p in res.points], "o", color=color, markersize=4)
        lo, hi = res.measured
        inside = np.geomspace(lo, hi, 100)
        beyond = np.geomspace(hi, 30 * hi, 50)
        f = res.fit
        ax.plot(
            inside,
            f.loss(inside),
            "-",
            color=color,
            linewidth=2,
            label=f"{name} ({res.kind}): {f.E:.3f} + {f.A:.3g}·C^-{f.alpha:.3f}",
        )
        ax.plot(beyond, f.loss(beyond), "--", color=color, linewidth=1.5)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle=":", linewidth=1, label="corpus entropy floor")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Scaling: runs (thin), frontier (dots), fit (solid; dashed = extrapolation)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def write_outputs(
    results: dict[str, ArchScaling], floor: float | None, output: Path, report_path: Path, plot_path: Path
) -> dict[str, Any]:
    """Write the metrics JSON, the report and the chart; returns the metrics."""
    mult = multipliers(results)
    data = metrics(results, mult)
    for value in _walk(data):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise DataError(f"{output}: a metric is {value!r}, not a finite number")
    plot(results, floor, plot_path)
    write_text(Path(report_path), report(results, mult, floor))
    write_text(Path(output), json.dumps(data, indent=2) + "\n")
    return data


def _walk(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    else:
        yield value
