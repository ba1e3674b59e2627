"""Stage compare: the architectures side by side from their evaluation results.

    python stages/compare.py --inputs metrics/eval_ar.json metrics/eval_diffusion.json metrics/eval_sdd.json \\
        --histories checkpoints/ar/history.jsonl checkpoints/diffusion/history.jsonl \\
        checkpoints/sdd/history.jsonl --data_dir data/corpus \\
        --output metrics/comparison.md --plot plots/quality_vs_steps.png --compute_plot plots/loss_vs_flops.png \\
        --sampling_plot plots/quality_vs_sampling_flops.png

Writes a Markdown table (every metric with its kind where architectures differ, and real validation text as a
reference column), a PNG of validity rate, generative perplexity and tokens/s against sampling steps, a PNG of
validity rate and generative perplexity against sampling FLOPs per generated token (AR's decoding as a point on
the same axes), and the comparison at equal training compute: validation loss against training FLOPs (from each
run's history, in the order of --inputs), each architecture's loss at a common budget and the compute it needs to
reach a common loss as a multiple of AR's, with the corpus entropy floor when the data has one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import run_stage
from lmcore.data import load_meta
from lmcore.errors import ConfigError
from lmcore.eval.compute_report import compute_section, plot_loss_vs_flops, val_curve
from lmcore.eval.report import (
    comparison_markdown,
    plot_quality_vs_sampling_flops,
    plot_quality_vs_steps,
    read_results,
)
from lmcore.files import write_text

DEFAULT_INPUTS = ["metrics/eval_ar.json", "metrics/eval_diffusion.json", "metrics/eval_sdd.json"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", nargs="+", default=DEFAULT_INPUTS, help="results JSONs of stages/evaluate.py")
    p.add_argument("--histories", nargs="*", default=[], help="each run's history.jsonl, in the order of --inputs")
    p.add_argument("--data_dir", help="prepared corpus, for its entropy floor (builtin:stories)")
    p.add_argument("--output", default="metrics/comparison.md")
    p.add_argument("--plot", default="plots/quality_vs_steps.png")
    p.add_argument("--compute_plot", default="plots/loss_vs_flops.png")
    p.add_argument("--sampling_plot", default="plots/quality_vs_sampling_flops.png")
    a = p.parse_args()
    if a.histories and len(a.histories) != len(a.inputs):
        raise ConfigError(f"--histories: {len(a.histories)} given for {len(a.inputs)} --inputs (one per run, in order)")
    runs = [read_results(Path(x)) for x in a.inputs]
    meta = load_meta(a.data_dir) if a.data_dir else {}
    floor = (meta.get("entropy") or {}).get("val", {}).get("nats_per_token")
    curves = {run["architecture"]: val_curve(Path(h)) for run, h in zip(runs, a.histories)}
    kinds = {run["architecture"]: run["metric_kind"] for run in runs}
    section, _ = compute_section(curves, kinds, floor) if curves else ("", None)
    write_text(Path(a.output), comparison_markdown(runs) + ("\n" + section if section else ""))
    plot_quality_vs_steps(runs, Path(a.plot))
    plot_quality_vs_sampling_flops(runs, Path(a.sampling_plot))
    if curves:
        plot_loss_vs_flops(curves, kinds, floor, Path(a.compute_plot))
    print(f"wrote {a.output}, {a.plot}, {a.sampling_plot}" + (f" and {a.compute_plot}" if curves else ""))


if __name__ == "__main__":
    run_stage(main)
