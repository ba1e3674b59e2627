"""Stage curves@{pretrain,finetune}: the runs' loss curves as the tables behind the curated `dvc plots` charts.

    python stages/curves.py --run ar checkpoints/ar/history.jsonl --run diffusion checkpoints/diffusion/history.jsonl \\
        --run sdd checkpoints/sdd/history.jsonl --data_dir data/corpus --output_dir plots/curves/pretrain

Writes `train.csv` and `val.csv` (architecture, step, flops, loss; lmcore/eval/curves.py) under --output_dir, with
the corpus entropy floor as a reference series when --data_dir has one. dvc.yaml `plots:` draws them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import run_stage
from lmcore.data import load_meta
from lmcore.errors import ConfigError
from lmcore.eval.curves import write_curves


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run",
        nargs=2,
        action="append",
        required=True,
        metavar=("NAME", "HISTORY"),
        help="a run's name in the legend (its architecture) and its history.jsonl; once per run",
    )
    p.add_argument("--data_dir", help="prepared corpus, for its entropy floor (none: no reference line)")
    p.add_argument("--output_dir", required=True, help="where train.csv and val.csv go")
    a = p.parse_args()
    names = [name for name, _ in a.run]
    if len(set(names)) != len(names):
        raise ConfigError(f"--run: each name once, got {' '.join(names)}")
    floor = None
    if a.data_dir:
        floor = (load_meta(a.data_dir).get("entropy") or {}).get("val", {}).get("nats_per_token")
    written = write_curves({name: Path(history) for name, history in a.run}, Path(a.output_dir), floor)
    print("wrote " + ", ".join(map(str, written)) + (f" (entropy floor {floor:.4f} nats/token)" if floor else ""))


if __name__ == "__main__":
    run_stage(main)
