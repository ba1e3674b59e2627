"""The data-constrained experiment's report (stages/data_constrained.py): AR against masked diffusion at one size
on a few unique tokens repeated for many epochs, as in Prabhudesai et al. (2025), "Diffusion Beats Autoregressive
in Data-Constrained Settings" (arXiv:2507.15857): with little unique data, AR's validation loss stops improving
and rises after a few epochs while diffusion keeps improving for up to ~100, so the order flips.

Each run of the grid (architecture × FLOPs budget, pipelines/data_constrained/params.yaml) is read from its
history.jsonl. Epochs count what the run trained on against the unique training data: for window objectives (AR)
tokens seen / train tokens, for document objectives (diffusion: one document per row) rows / train documents.
Both val/loss kinds are on the NLL scale (AR exact, diffusion a NELBO upper bound), so a lower diffusion bound
means a better diffusion model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lmcore.config import Params
from lmcore.errors import DataError
from lmcore.eval.compute_report import COMPARABLE_KINDS
from lmcore.eval.scaling_report import read_run, run_name
from lmcore.files import atomic_write, write_text
from lmcore.objectives import get_objective
from lmcore.train.tracking import read_history


def train_split(data_dir: Path) -> tuple[int, int]:
    """(tokens, documents) of the prepared corpus' train split, from its meta.json."""
    path = Path(data_dir) / "meta.json"
    try:
        train = json.loads(path.read_text())["splits"]["train"]
        return int(train["tokens"]), int(train["documents"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: cannot read the train split's size ({e.__class__.__name__}: {e})") from None


def final_step(history: Path) -> int:
    """The last optimizer step recorded in a history.jsonl."""
    steps = [record["step"] for _, record in read_history(history)]
    if not steps:
        raise DataError(f"{history}: empty history")
    return max(steps)


def epochs(arch: str, steps: int, params: Params, tokens: int, documents: int) -> float:
    """Passes over the unique training data after `steps` optimizer steps (see the module docstring)."""
    t = params.train
    rows = steps * t.batch_size * t.grad_accum_steps
    objective = get_objective(arch, dataclasses.asdict(params.objective(arch)))
    if objective.batch_kind == "windows":  # AR's may be either (ar.rows)
        return rows * t.seq_len / tokens
    return rows / documents


def analyse(runs_dir: Path, metrics_dir: Path, data_dir: Path, params: Params) -> dict[str, Any]:
    """Per architecture and budget: epochs, final and best validation loss; and, per budget, which is lower."""
    grid = params.scaling
    if len(grid.size_list()) != 1:
        raise DataError(
            f"{params.source}: scaling.sizes: the data-constrained experiment uses one size, got {grid.size_list()}"
        )
    size = grid.size_list()[0]
    tokens, documents = train_split(data_dir)
    out: dict[str, Any] = {"train_tokens": tokens, "train_documents": documents, "size": size, "runs": {}}
    for arch in grid.arch_list():
        for budget, flops in zip(grid.budget_list(), grid.budget_values()):
            name = run_name(arch, size, budget)
            curve, info = read_run(runs_dir, metrics_dir, name)
            if info["metric_kind"] not in COMPARABLE_KINDS:
                raise DataError(f"{name}: val/loss is {info['metric_kind']}, not on the NLL scale of this comparison")
            steps = final_step(runs_dir / name / "history.jsonl")
            final = max(curve)[1]  # the evaluation at the largest compute: the end of the run
            out["runs"][name] = {
                "architecture": arch,
                "kind": info["metric_kind"],
                "budget": flops,
                "steps": steps,
                "epochs": epochs(arch, steps, params, tokens, documents),
                "final_loss": final,
                "best_loss": min(loss for _, loss in curve),
            }
    return out


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics JSON: numbers only, per run and per budget (diffusion's loss minus AR's, for final and best)."""
    runs = result["runs"]
    out: dict[str, Any] = {
        "train_tokens": result["train_tokens"],
        "train_documents": result["train_documents"],
        "runs": {n: {k: v for k, v in r.items() if k not in ("architecture", "kind")} for n, r in runs.items()},
    }
    gaps = {}
    for r in runs.values():
        if r["architecture"] != "diffusion":
            continue
        ar = next((a for a in runs.values() if a["architecture"] == "ar" and a["budget"] == r["budget"]), None)
        if ar is not None:
            gaps[f"{r['budget']:.3g}"] = {
                "ar_epochs": ar["epochs"],
                "final_gap": r["final_loss"] - ar["final_loss"],
                "best_gap": r["best_loss"] - ar["best_loss"],
            }
    out["diffusion_minus_ar"] = gaps
    return out


def report(result: dict[str, Any], gaps: dict[str, Any]) -> str:
    """The Markdown table and the verdict on the order of AR and diffusion."""
    lines = [
        "# Data-constrained experiment",
        "",
        f"Size `{result['size']}`, {result['train_documents']:,} unique training documents "
        f"({result['train_tokens']:,} tokens) repeated for many epochs. Final: validation loss at the end of the "
        "run (its LR schedule fitted to the budget); best: the lowest validation loss during the run (what early "
        "stopping keeps). AR's loss is its exact NLL, diffusion's a NELBO (an upper bound on its NLL).",
        "",
        "| run | FLOPs | steps | epochs | final val loss | best val loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in sorted(result["runs"].items(), key=lambda item: (item[1]["budget"], item[1]["architecture"])):
        lines.append(
            f"| {name} | {r['budget']:.3g} | {r['steps']} | {r['epochs']:.1f} | {r['final_loss']:.4f} | "
            f"{r['best_loss']:.4f} |"
        )
    if gaps:
        lines += ["", "| FLOPs | AR epochs | diffusion − AR (final) | diffusion − AR (best) | lower (best) |"]
        lines.append("|---|---|---|---|---|")
        for budget, g in gaps.items():
            lower = "diffusion" if g["best_gap"] < 0 else "ar"
            lines.append(
                f"| {budget} | {g['ar_epochs']:.1f} | {g['final_gap']:+.4f} | {g['best_gap']:+.4f} | {lower} |"
            )
        flips = [b for b, g in gaps.items() if g["best_gap"] < 0]
        lines.append("")
        if flips:
            lines.append(
                f"The order flips: diffusion's best loss is below AR's at {', '.join(flips)} FLOPs, the shape "
                "Prabhudesai et al. (2025) report."
            )
        else:
            lines.append(
                "The order does not flip at these budgets: AR's best loss stays below diffusion's at every epoch "
                "count measured (Prabhudesai et al. 2025 report a flip at larger scale; see the gaps above for "
                "whether it narrows with epochs)."
            )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Final and best validation loss against epochs, one line per architecture (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    archs = sorted({r["architecture"] for r in result["runs"].values()})
    for i, arch in enumerate(archs):
        rows = sorted((r for r in result["runs"].values() if r["architecture"] == arch), key=lambda r: r["epochs"])
        xs = [r["epochs"] for r in rows]
        ax.plot(xs, [r["final_loss"] for r in rows], "-o", color=f"C{i}", label=f"{arch} final")
        ax.plot(xs, [r["best_loss"] for r in rows], ":s", color=f"C{i}", label=f"{arch} best")
    ax.set_xscale("log")
    ax.set_xlabel("epochs over the unique training data")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"Data-constrained: {result['train_tokens']:,} unique tokens, size {result['size']}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def write_outputs(result: dict[str, Any], output: Path, report_path: Path, plot_path: Path) -> dict[str, Any]:
    """Write the metrics JSON, the report and the chart; returns the metrics."""
    data = metrics(result)
    plot(result, plot_path)
    write_text(Path(report_path), report(result, data["diffusion_minus_ar"]))
    write_text(Path(output), json.dumps(data, indent=2) + "\n")
    return data
