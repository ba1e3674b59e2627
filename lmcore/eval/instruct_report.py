"""Outputs of the instruction evaluation (lmcore/eval/instruct.py): metrics JSON, a readable responses file, the
exact-match table (CSV, for `dvc plots`) and a bar chart (PNG). Every file is written atomically (lmcore/files.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmcore.eval.instruct import Response
from lmcore.files import atomic_write, write_json, write_text

MODELS = ("pretrained", "finetuned")


def responses_text(responses: dict[str, list[Response]], limit: int = 40) -> str:
    """The first `limit` responses of every model, with prompt, reference and scores."""
    lines = []
    for name, items in responses.items():
        lines.append(f"==================== {name} ({len(items)} responses)")
        for r in items[:limit]:
            e = r.example
            scores = ", ".join(f"{k}={v:.3g}" for k, v in r.scores.items())
            lines += [
                f"--- [{e.get('family') or '-'}] {e['instruction']}",
                *([f"input: {e['input']}"] if e.get("input") else []),
                f"reference: {e['output']}",
                f"response:  {r.text!r}  (eos={r.ended}; {scores})",
            ]
    return "\n".join(lines) + "\n"


def exact_match_table(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Rows family × columns `<arch>_<pretrained|finetuned>` of exact-match accuracy (empty when none scored)."""
    columns, values = [], {}
    for arch, entry in results.items():
        for model in MODELS:
            em = (entry.get(model) or {}).get("exact_match")
            if em:
                columns.append(f"{arch}_{model}")
                values[columns[-1]] = em
    families = sorted({f for em in values.values() for f in em if f != "overall"}) + (["overall"] if values else [])
    rows = [[f] + [round(values[c].get(f, 0.0), 6) for c in columns] for f in families]
    return ["family", *columns], rows


def write_plots(results: dict[str, Any], plots_dir: Path) -> list[Path]:
    """exact_match.csv (one row per family) and exact_match.png (grouped bars); nothing when nothing was scored."""
    header, rows = exact_match_table(results)
    if not rows:
        return []
    plots_dir = Path(plots_dir)
    csv = plots_dir / "exact_match.csv"
    write_text(csv, "\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    width = 0.8 / max(len(header) - 1, 1)
    for j, name in enumerate(header[1:]):
        ax.bar([i + j * width for i in range(len(rows))], [r[j + 1] for r in rows], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [r[0] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1)
    ax.set_title("Instruction following: pretrained vs fine-tuned")
    ax.legend(fontsize="small")
    fig.tight_layout()
    png = plots_dir / "exact_match.png"
    atomic_write(png, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return [csv, png]


def write_outputs(
    results: dict[str, Any],
    responses: dict[str, list[Response]],
    output: Path,
    responses_file: Path,
    plots_dir: Path | None,
) -> list[Path]:
    """Write every output; returns the paths written."""
    write_text(responses_file, responses_text(responses))
    write_json(output, results)
    return [output, responses_file, *(write_plots(results["models"], plots_dir) if plots_dir else [])]
