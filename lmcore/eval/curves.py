"""Loss curves of several runs in one table per split, for the curated `dvc plots` charts (dvc.yaml `plots:`).

`train.csv` and `val.csv` hold one row per logged step of each run: `architecture, step, flops, loss` (flops: the
run's training FLOPs so far, lmcore/train/perf.py). With the architecture a column, the templates in .dvc/plots/
draw one line per architecture with its name in the legend; DVC's own templates can only tell curves apart by
file path. When the corpus has a known entropy floor (builtin:stories: the lowest expected loss a model can reach),
both tables also hold it as the series `entropy floor`, at the first and last step and FLOPs of the runs, so it
draws as a horizontal reference line on either axis. It bounds the exact AR loss; diffusion's NELBO is an upper
bound of a likelihood and SDD's loss is no likelihood (README, Metrics), so theirs are only drawn beside it.
"""

from __future__ import annotations

from pathlib import Path

from lmcore.errors import DataError
from lmcore.files import write_text
from lmcore.train.tracking import read_history

SPLITS = ("train", "val")
COLUMNS = ("architecture", "step", "flops", "loss")
FLOOR = "entropy floor"


def curve(history: Path, split: str) -> list[tuple[int, float | None, float]]:
    """(step, flops, loss) of every record of a history.jsonl that logged `{split}/loss` (flops None when the run
    did not log `{split}/flops`)."""
    if not Path(history).is_file():
        raise DataError(f"{history}: no training history (run the training stage first)")
    points = []
    for _, record in read_history(Path(history)):
        metrics = record.get("metrics") or {}
        if f"{split}/loss" in metrics:
            points.append((record["step"], metrics.get(f"{split}/flops"), metrics[f"{split}/loss"]))
    if not points:
        raise DataError(f"{history}: no {split}/loss logged")
    return points


def curve_rows(runs: dict[str, Path], split: str, floor: float | None = None) -> list[tuple]:
    """Rows `(architecture, step, flops, loss)` of every run in order, then the floor's two rows when given."""
    rows = [(name, *point) for name, history in runs.items() for point in curve(history, split)]
    if floor is not None:
        steps = [r[1] for r in rows]
        flops = [r[2] for r in rows if r[2] is not None]
        ends = (min(flops), max(flops)) if flops else (None, None)
        rows += [(FLOOR, min(steps), ends[0], floor), (FLOOR, max(steps), ends[1], floor)]
    return rows


def write_curves(runs: dict[str, Path], output_dir: Path, floor: float | None = None) -> list[Path]:
    """`<output_dir>/train.csv` and `val.csv`; the paths."""
    if not runs:
        raise DataError("no runs given: name each run and its history.jsonl")
    written = []
    for split in SPLITS:
        rows = curve_rows(runs, split, floor)
        text = "\n".join(",".join("" if v is None else str(v) for v in row) for row in [COLUMNS, *rows]) + "\n"
        path = Path(output_dir) / f"{split}.csv"
        write_text(path, text)
        written.append(path)
    return written
