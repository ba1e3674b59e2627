"""The equal-compute section of the comparison: each architecture's validation curve against training FLOPs
(read from its run's history.jsonl), the table of lmcore/eval/compute_compare.py, and a chart with the corpus'
entropy floor.

Only losses on one scale are compared (AR's exact NLL and diffusion's NELBO, an upper bound on it); SDD's
denoising cross-entropy is drawn on the chart for its shape but left out of the table, and the text says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmcore.eval.compute_compare import compare, comparison_markdown
from lmcore.files import atomic_write
from lmcore.train.tracking import read_history

COMPARABLE_KINDS = ("exact", "nelbo_bound")  # val/loss kinds that bound or equal the same NLL


def val_curve(history: Path) -> list[tuple[float, float]]:
    """(training FLOPs, val/loss) at each validation of a run, from its history.jsonl (val/flops is logged there)."""
    points = []
    for _, record in read_history(Path(history)):
        metrics = record.get("metrics") or {}
        if "val/loss" in metrics and metrics.get("val/flops"):
            points.append((float(metrics["val/flops"]), float(metrics["val/loss"])))
    return points


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
