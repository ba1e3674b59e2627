"""Outputs of the instruction evaluation (lmcore/eval/instruct.py): the results JSON, its headline numbers (the DVC
metrics file), a readable responses file, the exact-match rows (CSV, for `dvc plots`) and a bar chart (PNG).
Every file is written atomically (lmcore/files.py)."""

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


def exact_match_table(results: dict[str, Any]) -> list[list[Any]]:
    """Long-format rows `[family, architecture, model, exact_match]` (model: pretrained | finetuned), families
    sorted with `overall` last: one row per bar of the chart (empty when nothing was scored)."""
    rows = []
    for arch, entry in results.items():
        for model in MODELS:
            for family, value in ((entry.get(model) or {}).get("exact_match") or {}).items():
                rows.append([family, arch, model, round(value, 6)])
    return sorted(rows, key=lambda r: (r[0] == "overall", r[0]))


def headline_metrics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What `dvc metrics show` tabulates for the instruction evaluation, per architecture (one metrics file, so one
    row, each): the overall exact match of each model, `{arch: {"exact_match": {model: value}}}`; the rest stays in
    the results JSON."""
    out: dict[str, dict[str, Any]] = {}
    for arch, entry in results.items():
        for model in MODELS:
            overall = ((entry.get(model) or {}).get("exact_match") or {}).get("overall")
            if isinstance(overall, (int, float)):
                out.setdefault(arch, {}).setdefault("exact_match", {})[model] = overall
    return out


def write_plots(results: dict[str, Any], plots_dir: Path) -> list[Path]:
    """exact_match.csv (the rows of exact_match_table, for the `dvc plots` bar chart in dvc.yaml) and
    exact_match.png (the same bars); nothing when nothing was scored."""
    rows = exact_match_table(results)
    if not rows:
        return []
    plots_dir = Path(plots_dir)
    csv = plots_dir / "exact_match.csv"
    header = ["family", "architecture", "model", "exact_match"]
    write_text(csv, "\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r[0] for r in rows))
    series = list(dict.fromkeys(f"{r[1]} {r[2]}" for r in rows))
    value = {(r[0], f"{r[1]} {r[2]}"): r[3] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(families)), 4))
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        xs = [i + j * width for i in range(len(families))]
        ax.bar(xs, [value.get((f, name), 0.0) for f in families], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(families))], families, rotation=30, ha="right")
    ax.set_ylabel("exact match (share of test examples)")
    ax.set_ylim(0, 1)
    ax.set_title("Instruction following: exact match by task family")
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
    metrics_dir: Path | None = None,
) -> list[Path]:
    """Write every output (the headline numbers, `<metrics_dir>/evaluate_instruct_<arch>.json`, only when
    `metrics_dir` is given); returns the paths written."""
    write_text(responses_file, responses_text(responses))
    write_json(output, results)
    headline = []
    for arch, numbers in headline_metrics(results["models"]).items() if metrics_dir else ():
        headline.append(Path(metrics_dir) / f"evaluate_instruct_{arch}.json")
        write_json(headline[-1], numbers)
    return [output, *headline, responses_file, *(write_plots(results["models"], plots_dir) if plots_dir else [])]
