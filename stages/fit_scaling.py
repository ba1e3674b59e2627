"""Stage fit_scaling (pipelines/scaling/dvc.yaml): fit L(C) = E + A·C^(−α) per architecture on the
compute-optimal frontier of the scaling grid's runs, and report the compute multipliers relative to AR.

    cd pipelines/scaling && python ../../stages/fit_scaling.py --params params.yaml --runs_dir checkpoints \\
        --run_metrics_dir metrics/runs --output metrics/fit.json --report metrics/report.md \\
        --plot plots/loss_vs_flops.png

(the defaults; the pipeline is a DVC subrepo, its paths relative to its folder)

The grid (architectures × sizes × budgets) is `scaling:` of --params; each run is read from
<runs_dir>/<arch>-<size>-<budget>/history.jsonl (val/loss against val/flops) and its train metrics JSON
<run_metrics_dir>/<arch>-<size>-<budget>.json (the loss kind, the corpus entropy floor). Writes the fitted
parameters with standard errors and the multipliers (numbers only), a Markdown report and a log-x chart of the runs,
frontiers and fitted laws (dashed where extrapolated).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import run_stage
from lmcore.config import load_params
from lmcore.eval.scaling_report import analyse, write_outputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file with the `scaling:` grid")
    p.add_argument("--runs_dir", default="checkpoints", help="one folder per run (its history.jsonl)")
    p.add_argument("--run_metrics_dir", default="metrics/runs", help="each run's train metrics JSON")
    p.add_argument("--output", default="metrics/fit.json", help="metrics JSON (numbers only)")
    p.add_argument("--report", default="metrics/report.md")
    p.add_argument("--plot", default="plots/loss_vs_flops.png")
    a = p.parse_args()
    grid = load_params(a.params).scaling
    results, floor = analyse(Path(a.runs_dir), Path(a.run_metrics_dir), grid)
    data = write_outputs(results, floor, Path(a.output), Path(a.report), Path(a.plot))
    for name, row in data.items():
        se = "" if row["alpha_se"] is None else f" ± {row['alpha_se']:.3f}"
        line = f"{name}: L(C) = {row['E']:.4f} + {row['A']:.4g}·C^(-{row['alpha']:.4f}{se}) (R² {row['r2']:.3f})"
        mult = row.get("multiplier_vs_ar")
        if mult and mult["measured"] is not None:
            line += f"; {mult['measured']:.2f}× AR's compute at loss {mult['loss']:.3f} (measured)"
        print(line)
    print(f"wrote {a.output}, {a.report}, {a.plot}")


if __name__ == "__main__":
    run_stage(main)
