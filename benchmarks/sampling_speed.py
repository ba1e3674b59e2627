"""Sampling throughput benchmark (not part of the test suite or the default pipeline).

    python benchmarks/sampling_speed.py --checkpoints checkpoints/ar/best.pt checkpoints/diffusion/best.pt \
        checkpoints/sdd/best.pt --steps 8,32,128 --batch_sizes 1,16,64 --repeats 3 --output bench.json

For each checkpoint, batch size and (for samplers with steps) step count: generated tokens/s and seconds per
sample, the median over `--repeats` timed calls after one warm-up call. AR decodes with its KV cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lmcore.cli import run_stage
from lmcore.eval.generation import steps_knob
from lmcore.eval.speed import device_facts, measure, warm_up
from lmcore.files import write_json
from lmcore.train.checkpoint import load_model


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--steps", default="8,32,128", help="step counts for samplers with steps")
    p.add_argument("--batch_sizes", default="1,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--length", type=int, default=0, help="tokens per row; 0 = the checkpoint's train seq_len")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--output", help="write the results as JSON here too")
    a = p.parse_args()
    results = []
    for path in a.checkpoints:
        loaded = load_model(path, None, a.device, a.dtype)
        length = a.length or int((loaded.info.get("train_config") or {}).get("seq_len", 128))
        steps_list = _ints(a.steps) if steps_knob(loaded) is not None else [None]
        warm_up(loaded, length, steps_list[0])
        for steps in steps_list:
            for batch in _ints(a.batch_sizes):
                runs = [measure(loaded, length, steps, batch, 1, seed=r) for r in range(a.repeats)]
                row = {
                    "checkpoint": path,
                    "architecture": loaded.architecture,
                    "steps": steps,
                    "batch_size": batch,
                    "length": length,
                    **device_facts(loaded),
                    "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in runs),
                    "seconds_per_sample": statistics.median(r["seconds_per_sample"] for r in runs),
                }
                results.append(row)
                print(
                    f"{loaded.architecture:>9}  steps {steps!s:>4}  batch {batch:>4}  "
                    f"{row['tokens_per_sec']:10.1f} tok/s  {row['seconds_per_sample']:8.4f} s/sample",
                    flush=True,
                )
    if a.output:
        write_json(Path(a.output), {"runs": results})
        print(json.dumps({"wrote": a.output}))


if __name__ == "__main__":
    run_stage(main)
