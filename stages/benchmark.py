"""Training throughput benchmark: tokens/s, MFU and peak memory per architecture and size, printed as JSON.

It times the real training step (objective loss, backward, clipping, fused AdamW on CUDA) on synthetic tokens:
    python stages/benchmark.py --architectures ar,diffusion,sdd --sizes small,large,xl --compile
    python stages/benchmark.py --sizes xl --gradient_checkpointing --batch_size 32
    python stages/benchmark.py --architectures ar --sizes tiny --seq_len 64 --batch_size 4 --steps 3   # CPU
MFU = tokens/s x FLOPs/token / the GPU's dense bf16 peak (lmcore/train/perf.py states the FLOPs formula);
null on CPU and on GPUs missing from the peak table. Peak memory is CUDA's max allocated on GPU and the
process's max RSS on CPU; `estimated_peak_memory_mib` is a formula's estimate, beside it for comparison.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lmcore.cli import bool_flag, run_stage
from lmcore.errors import ConfigError
from lmcore.objectives import REGISTRY
from lmcore.train.benchmark import BenchConfig, run_isolated
from lmcore.train.perf import MFU_FORMULA


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--architectures", default="ar,diffusion,sdd", help="comma-separated: ar,diffusion,sdd")
    p.add_argument("--sizes", default="small,large,xl", help="comma-separated presets or model .yaml/.json files")
    p.add_argument("--output", help="also write the JSON to this file")
    defaults = BenchConfig()
    for f in dataclasses.fields(BenchConfig):
        if f.name in ("architecture", "size"):
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            bool_flag(p, f.name, f"(default {default})")
        else:
            p.add_argument(f"--{f.name}", type=type(default), default=default, help=f"(default {default})")
    a = p.parse_args()
    archs = [x for x in a.architectures.split(",") if x]
    sizes = [x for x in a.sizes.split(",") if x]
    unknown = [x for x in archs if x not in REGISTRY]
    if unknown or not archs or not sizes:
        raise ConfigError(f"--architectures: unknown '{','.join(unknown)}' (known: {', '.join(REGISTRY)})"
                          if unknown else "--architectures and --sizes must name at least one each")
    if a.steps < 1 or a.warmup < 0:
        raise ConfigError("--steps must be ≥ 1 and --warmup ≥ 0")
    common = {f.name: getattr(a, f.name) for f in dataclasses.fields(BenchConfig)
              if f.name not in ("architecture", "size")}
    common = {k: (getattr(defaults, k) if v is None else v) for k, v in common.items()}  # unset bool flags
    results = []
    for size in sizes:
        for arch in archs:
            print(f"benchmark: {arch} {size} ...", file=sys.stderr, flush=True)
            res = run_isolated(BenchConfig(architecture=arch, size=size, **common))
            summary = res.get("error") or (f"{res['tokens_per_sec']:,.0f} tokens/s, "
                                           f"peak {res['peak_memory_mib']:,.0f} MiB")
            print(f"benchmark: {arch} {size}: {summary}", file=sys.stderr, flush=True)
            results.append(res)
    report = {"mfu_formula": MFU_FORMULA, "results": results}
    text = json.dumps(report, indent=2)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    run_stage(main)
