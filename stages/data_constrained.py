"""Stage report (pipelines/data_constrained/dvc.yaml): AR against masked diffusion when a few unique tokens are
repeated for many epochs (Prabhudesai et al. 2025), from the runs of the experiment's grid.

    cd pipelines/data_constrained && python ../../stages/data_constrained.py --params params.yaml \\
        --runs_dir checkpoints --run_metrics_dir metrics/runs --data_dir data/corpus --output metrics/result.json \\
        --report metrics/report.md --plot plots/loss_vs_epochs.png

(the defaults; the pipeline is a DVC subrepo, its paths relative to its folder)

Each run (`scaling:` architectures × budgets at its one size) is read from <runs_dir>/<arch>-<size>-<budget>/ and
<run_metrics_dir>/<arch>-<size>-<budget>.json; epochs from the run's steps, the `train:` batch and the corpus'
train split. Writes the numbers (JSON), a Markdown table with the verdict, and loss against epochs (PNG).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import run_stage
from lmcore.config import load_params
from lmcore.eval.data_constrained import analyse, write_outputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--runs_dir", default="checkpoints", help="one folder per run (history.jsonl)")
    p.add_argument("--run_metrics_dir", default="metrics/runs", help="each run's train metrics JSON")
    p.add_argument("--data_dir", default="data/corpus", help="the prepared corpus (its meta.json)")
    p.add_argument("--output", default="metrics/result.json", help="metrics JSON (numbers only)")
    p.add_argument("--report", default="metrics/report.md")
    p.add_argument("--plot", default="plots/loss_vs_epochs.png")
    a = p.parse_args()
    params = load_params(a.params)
    result = analyse(Path(a.runs_dir), Path(a.run_metrics_dir), Path(a.data_dir), params)
    data = write_outputs(result, Path(a.output), Path(a.report), Path(a.plot))
    for name, run in data["runs"].items():
        print(
            f"{name}: {run['epochs']:.1f} epochs, final val loss {run['final_loss']:.4f}, best {run['best_loss']:.4f}"
        )
    print(f"wrote {a.output}, {a.report}, {a.plot}")


if __name__ == "__main__":
    run_stage(main)
