"""Evaluation outputs: reading a results JSON back, the readable samples file, the comparison table and the
quality-vs-steps chart. Files are written atomically (lmcore/files.py), so none is ever half-written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmcore.errors import DataError
from lmcore.eval.generation import Sample
from lmcore.eval.kinds import GRAMMAR_JUDGE, KIND_NOTES
from lmcore.files import atomic_write, read_json_object


def read_results(path: Path) -> dict[str, Any]:
    """Read an evaluation results JSON; a missing or broken file is a DataError naming it."""
    path = Path(path)
    data = read_json_object(
        path, f"{path}: evaluation results not found (run stages/evaluate.py first)", "results JSON"
    )
    if "architecture" not in data:
        raise DataError(f"{path}: not an evaluation results JSON (no 'architecture')")
    return data


# ---------------------------------------------------------------- headline metrics
# What `dvc metrics show` tabulates for an evaluation: a few numbers under the names the results JSON gives them
# (the val.* names are training's, so evaluation and training rows share those columns). Everything else — the
# kinds, settings, paths, the reference text's values, the steps sweep — stays in the results JSON, a plain output.
HEADLINE: tuple[str, ...] = (
    "step",
    "val.loss",
    "val.perplexity",
    "val.accuracy",
    "val.all_accuracy",
    "generation.unconditional.validity_rate",
    "generation.unconditional.gen_perplexity",
    "speed.batched.tokens_per_sec",
)


def headline_metrics(results: dict[str, Any], paths: Sequence[str] = HEADLINE) -> dict[str, Any]:
    """The numbers at `paths` of a results JSON, nested as there; a path the run has no number for is left out."""
    out: dict[str, Any] = {}
    for path in paths:
        value = _get(results, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            *parents, leaf = path.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return out


# ---------------------------------------------------------------- samples file
def samples_text(results: dict[str, Any], samples: dict[str, list[Sample]], per_sweep: int = 3) -> str:
    """All unconditional samples and continuations, and the first few of each step count, as readable text."""
    gen = results.get("generation", {})
    lines = [
        f"# Samples of {results['architecture']} ({results['checkpoint']}, step {results.get('step')})",
        f"# temperature {gen.get('temperature')}, top_p {gen.get('top_p')}, length {gen.get('length')}; "
        "[valid] = the story grammar can produce it, [eos] = the model ended the text itself",
        "",
    ]
    for section, items in samples.items():
        if section.startswith("steps_"):
            title, items = f"{section.replace('_', ' ')} (first {per_sweep})", items[:per_sweep]
        elif section == "continuation":
            title = "continuations of validation prefixes: prompt ⟨⟨ then the model's text"
        else:
            steps = gen.get("steps")
            title = f"unconditional ({f'{steps} steps' if steps else 'left to right'})"
        lines += [f"## {title}", ""]
        for i, s in enumerate(items, 1):
            flags = " ".join(f for f, on in (("[valid]", s.meta.get("valid")), ("[eos]", s.ended)) if on)
            prompt = (s.text[: len(s.text) - len(s.continuation)] + " ⟨⟨ ") if s.prompt_ids else ""
            lines += [f"### {section} {i} {flags}".rstrip(), prompt + s.continuation, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- comparison table
def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _kind(run: dict[str, Any], path: str) -> str | None:
    """The kind of the metric at `path` ("val.loss" → kind["val.loss"], others by their bare name)."""
    kinds = run.get("kind") or {}
    return kinds.get(path) if path.startswith("val.") else kinds.get(path.rsplit(".", 1)[-1])


ROWS: list[tuple[str, str]] = [
    ("val.loss", "val loss"),
    ("val.perplexity", "val perplexity"),
    ("val.accuracy", "val accuracy"),
    ("val.all_accuracy", "val accuracy, all positions"),
    ("generation.unconditional.validity_rate", "validity rate"),
    ("generation.unconditional.gen_perplexity", "generative perplexity (judge below)"),
    ("generation.unconditional.unigram_entropy", "unigram entropy (nats)"),
    ("generation.unconditional.self_bleu4", "Self-BLEU-4"),
    ("generation.unconditional.distinct_1", "distinct-1"),
    ("generation.unconditional.distinct_2", "distinct-2"),
    ("generation.unconditional.distinct_3", "distinct-3"),
    ("generation.unconditional.repeated_4gram_rate", "repeated 4-gram rate"),
    ("generation.unconditional.mean_length_words", "mean length (words)"),
    ("generation.unconditional.proper_ending_fraction", "proper endings"),
    ("generation.continuation.validity_rate", "continuations: validity rate"),
    ("generation.continuation.gen_perplexity", "continuations: generative perplexity"),
    ("generation.continuation.proper_ending_fraction", "continuations: proper endings"),
    ("speed.batch_1.tokens_per_sec", "tokens/s, batch 1"),
    ("speed.batch_1.seconds_per_sample", "s/sample, batch 1"),
    ("speed.batched.tokens_per_sec", "tokens/s, batched"),
    ("speed.batched.seconds_per_sample", "s/sample, batched"),
]


def comparison_markdown(runs: Sequence[dict[str, Any]]) -> str:
    """A metrics × architectures table (with each number's kind), the reference text's values, quality by steps."""
    names = [r["architecture"] for r in runs]
    ref = next((r["generation"]["reference"] for r in runs if _get(r, "generation.reference")), {})
    out = [
        "# Evaluation: architectures side by side",
        "",
        "Each cell is `value (kind)` where the kind differs across architectures: see the notes below. "
        "`reference` is real validation text through the same generation metrics.",
        "",
        "| metric | " + " | ".join(names) + " | reference |",
        "|---" * (len(names) + 2) + "|",
    ]
    notes: set[str] = set()
    for path, label in ROWS:
        values = [_get(r, path) for r in runs]
        if all(v is None for v in values):
            continue
        kinds = [_kind(r, path) for r in runs]
        show_kind = len({k for k in kinds if k}) > 1
        cells = []
        for v, k in zip(values, kinds):
            cells.append(_fmt(v) + (f" ({k})" if show_kind and k and v is not None else ""))
            if show_kind and k:
                notes.add(k)
        key = path.split(".")[-1]
        ref_value = ref.get(key) if path.startswith("generation.unconditional") else None
        out.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(ref_value)} |")
    steps = [_get(r, "generation.steps") for r in runs]
    out += [
        "",
        "Sampling steps of the generation rows: "
        + ", ".join(f"{n} {s if s is not None else 'n/a (left to right, KV cache)'}" for n, s in zip(names, steps)),
    ]
    out.append("Generative perplexity judged by: " + ", ".join(f"{n} {_judge_label(r)}" for n, r in zip(names, runs)))
    facts = [r.get("speed", {}) for r in runs]
    if any(facts):
        out.append(
            "Speed measured on: "
            + ", ".join(
                f"{n} {f.get('device_name', f.get('device'))}/{f.get('dtype')}" for n, f in zip(names, facts) if f
            )
        )
    sweep_rows = []
    for r in runs:
        for row in (r.get("quality_vs_steps") or {}).values():
            sweep_rows.append(_sweep_row(r["architecture"], row))
        unc = _get(r, "generation.unconditional")
        if not r.get("quality_vs_steps") and unc and unc.get("sampling_flops_per_token"):
            sweep_rows.append(_sweep_row(r["architecture"], {**unc, "steps": "KV cache"}))
    if sweep_rows:
        out += [
            "",
            "## Quality against sampling steps and sampling compute",
            "",
            "Sampling compute: forward FLOPs per generated token (lmcore/train/perf.py `sampling_flops`) and the "
            "measured seconds per generated token of the batched run; AR's left-to-right decoding is its one setting.",
            "",
            "| architecture | steps | validity rate | gen. perplexity | unigram entropy | sampling FLOPs/token | "
            "s/token batched | tokens/s batch 1 |",
            "|---|---|---|---|---|---|---|---|",
            *sweep_rows,
        ]
    if notes:
        out += ["", "## Kinds", ""] + [f"- `{k}`: {KIND_NOTES.get(k, k)}" for k in sorted(notes)]
    return "\n".join(out) + "\n"


def _sweep_row(arch: str, row: dict[str, Any]) -> str:
    """One line of the quality-against-sampling-compute table."""
    cells = [row.get(k) for k in ("validity_rate", "gen_perplexity", "unigram_entropy", "sampling_flops_per_token")]
    cells += [row.get("seconds_per_token"), row.get("tokens_per_sec_batch1")]
    return f"| {arch} | {row.get('steps')} | " + " | ".join(_fmt(c) for c in cells) + " |"


def _judge_label(run: dict[str, Any]) -> str:
    """Who judged a run's generative perplexity (lmcore/eval/judge.py), or why nobody did."""
    judge = run.get("judge")
    if judge == GRAMMAR_JUDGE:
        return "the story grammar (exact, under the generating grammar; valid samples)"
    return f"the AR checkpoint {judge}" if judge else run.get("judge_note", "none")


# ---------------------------------------------------------------- chart
def plot_quality_vs_steps(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """PNG: validity rate, generative perplexity and tokens/s against sampling steps, one line per architecture
    with steps (diffusion, SDD); samplers without steps (AR) appear as horizontal dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("validity_rate", "validity rate", "generation.unconditional.validity_rate"),
        ("gen_perplexity", "generative perplexity", "generation.unconditional.gen_perplexity"),
        ("tokens_per_sec_batch1", "tokens/s, batch 1", "speed.batch_1.tokens_per_sec"),
        ("tokens_per_sec_batched", "tokens/s, batched", "speed.batched.tokens_per_sec"),
    ]
    panels = [
        p
        for p in panels
        if any(
            _get(r, p[2]) is not None or any(p[0] in row for row in (r.get("quality_vs_steps") or {}).values())
            for r in runs
        )
    ]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, (key, label, flat) in zip(axes[0], panels):
        for i, r in enumerate(runs):
            color = f"C{i}"
            rows = sorted((r.get("quality_vs_steps") or {}).values(), key=lambda row: row["steps"])
            pts = [(row["steps"], row[key]) for row in rows if row.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=r["architecture"])
            elif _get(r, flat) is not None:
                ax.axhline(_get(r, flat), color=color, linestyle="--", label=f"{r['architecture']} (no steps)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_title(label, fontsize=10)
        if key.startswith("tokens") or key == "gen_perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)


def plot_quality_vs_sampling_flops(runs: Sequence[dict[str, Any]], path: Path) -> None:
    """PNG: validity rate and generative perplexity against sampling FLOPs per generated token (log), one line per
    architecture over its steps sweep (diffusion, SDD; each point labelled with its steps) and AR's left-to-right
    decoding as a single point: quality per sampling compute, on the same axes for every architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("validity_rate", "validity rate"), ("gen_perplexity", "generative perplexity")]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for i, r in enumerate(runs):
            rows = sorted((r.get("quality_vs_steps") or {}).values(), key=lambda row: row["steps"])
            if not rows:  # no steps to sweep (AR): its one decoding setting
                rows = (
                    [{**_get(r, "generation.unconditional"), "steps": None}]
                    if _get(r, "generation.unconditional")
                    else []
                )
            pts = [
                (row["sampling_flops_per_token"], row[key], row["steps"])
                for row in rows
                if row.get(key) is not None and row.get("sampling_flops_per_token")
            ]
            if not pts:
                continue
            xs, ys, _ = zip(*pts)
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=r["architecture"], linestyle="-" if len(pts) > 1 else "")
            for x, y, n in pts:
                ax.annotate(
                    str(n) if n is not None else "KV cache",
                    (x, y),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set_xlabel("sampling FLOPs per generated token")
        ax.set_title(label + (" (judge: see comparison.md)" if key == "gen_perplexity" else ""), fontsize=10)
        if key == "gen_perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)
