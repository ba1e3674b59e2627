"""Stage compare: the architectures side by side from their evaluation results.

    python stages/compare.py --inputs metrics/eval_ar.json metrics/eval_diffusion.json metrics/eval_sdd.json \\
        --output metrics/comparison.md --plot plots/quality_vs_steps.png

Writes a Markdown table (every metric with its kind where architectures differ, and real validation text as a
reference column) and a PNG of validity rate, generative perplexity and tokens/s against sampling steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import run_stage
from lmcore.eval.report import comparison_markdown, plot_quality_vs_steps, read_results
from lmcore.files import write_text

DEFAULT_INPUTS = ["metrics/eval_ar.json", "metrics/eval_diffusion.json", "metrics/eval_sdd.json"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", nargs="+", default=DEFAULT_INPUTS, help="results JSONs of stages/evaluate.py")
    p.add_argument("--output", default="metrics/comparison.md")
    p.add_argument("--plot", default="plots/quality_vs_steps.png")
    a = p.parse_args()
    runs = [read_results(Path(x)) for x in a.inputs]
    write_text(Path(a.output), comparison_markdown(runs))
    plot_quality_vs_steps(runs, Path(a.plot))
    print(f"wrote {a.output} and {a.plot}")


if __name__ == "__main__":
    run_stage(main)
