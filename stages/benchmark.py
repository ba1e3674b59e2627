"""Training throughput benchmark: tokens/s, MFU and peak memory per architecture and size, printed as JSON.

It times the real training step (objective loss, backward, clipping, fused AdamW on CUDA) on synthetic tokens:
    python stages/benchmark.py --architectures ar,diffusion,sdd --sizes small,large,xl --compile
    python stages/benchmark.py --sizes xl --gradient_checkpointing --batch_size 32
    python stages/benchmark.py --architectures ar --sizes tiny --seq_len 64 --batch_size 4 --steps 3   # CPU
    python stages/benchmark.py --architectures diffusion --sizes small --seq_len 512 --batch_size 4 \
        --loss_path lean,reference --repeats 2     # lean vs reference loss path, runs alternating A/B/A/B
MFU = tokens/s x FLOPs/token / the GPU's dense bf16 peak (lmcore/train/perf.py states the FLOPs formula);
null on CPU and on GPUs missing from the peak table. Peak memory is CUDA's max allocated on GPU and the
process's max RSS on CPU; `estimated_peak_memory_mib` is a formula's estimate, beside it for comparison.
`loss_path_ms` / `loss_path_peak_mib` are the objective's loss alone (forward + backward, no optimizer; the peak
above the memory in use before it). `step_cpu_time_ms` / `loss_path_cpu_ms` are this process's CPU time (all
threads): on a shared CPU they leave out the time other processes held the cores. With several --loss_path
values each configuration runs once per path per repeat, alternating, each in its own process, and
`comparison` gives the medians and the lean/reference ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from lmcore.cli import bool_flag, run_stage
from lmcore.errors import ConfigError
from lmcore.objectives import REGISTRY
from lmcore.objectives.losses import LOSS_PATHS
from lmcore.train.benchmark import BenchConfig, run_isolated
from lmcore.train.perf import MFU_FORMULA


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--architectures", default="ar,diffusion,sdd", help="comma-separated: ar,diffusion,sdd")
    p.add_argument("--sizes", default="small,large,xl", help="comma-separated presets or model .yaml/.json files")
    p.add_argument("--output", help="also write the JSON to this file")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration and loss path (default 1)")
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
        raise ConfigError(
            f"--architectures: unknown '{','.join(unknown)}' (known: {', '.join(REGISTRY)})"
            if unknown
            else "--architectures and --sizes must name at least one each"
        )
    if a.steps < 1 or a.warmup < 0 or a.loss_steps < 0 or a.repeats < 1:
        raise ConfigError("--steps and --repeats must be ≥ 1, --warmup and --loss_steps ≥ 0")
    paths = [x for x in a.loss_path.split(",") if x]
    if not paths or any(x not in LOSS_PATHS for x in paths):
        raise ConfigError(
            f"--loss_path: expected a comma-separated subset of {', '.join(LOSS_PATHS)}, got '{a.loss_path}'"
        )
    common = {
        f.name: getattr(a, f.name)
        for f in dataclasses.fields(BenchConfig)
        if f.name not in ("architecture", "size", "loss_path")
    }
    common = {k: (getattr(defaults, k) if v is None else v) for k, v in common.items()}  # unset bool flags
    results = []
    for size in sizes:
        for arch in archs:
            for repeat in range(a.repeats):
                for path in paths:  # alternating A/B/A/B: slow drifts of a shared machine hit both paths alike
                    name = f"{arch} {size} {path} (run {repeat + 1}/{a.repeats})"
                    print(f"benchmark: {name} ...", file=sys.stderr, flush=True)
                    res = run_isolated(BenchConfig(architecture=arch, size=size, loss_path=path, **common))
                    summary = res.get("error") or (
                        f"step {res['step_time_ms']:,.0f} ms, {res['tokens_per_sec']:,.0f} tokens/s, peak "
                        f"{res['peak_memory_mib']:,.0f} MiB; loss path {_fmt(res['loss_path_ms'])} ms, "
                        f"peak {_fmt(res['loss_path_peak_mib'])} MiB"
                    )
                    print(f"benchmark: {name}: {summary}", file=sys.stderr, flush=True)
                    results.append(res)
    report = {"mfu_formula": MFU_FORMULA, "results": results}
    if len(paths) > 1:
        report["comparison"] = compare_paths(results)
        for row in report["comparison"]:
            print(f"benchmark: {json.dumps(row)}", file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text + "\n")
    print(text)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def compare_paths(results: list[dict]) -> list[dict]:
    """Per (architecture, size): each loss path's medians over its runs, and reference/lean ratios."""
    keys = (
        "step_time_ms",
        "step_cpu_time_ms",
        "peak_memory_mib",
        "loss_path_ms",
        "loss_path_cpu_ms",
        "loss_path_peak_mib",
    )
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault((r["architecture"], r["size"]), {}).setdefault(r["loss_path"], []).append(r)
    rows = []
    for (arch, size), by_path in groups.items():
        row: dict = {"architecture": arch, "size": size}
        for path, runs in by_path.items():
            row[path] = {
                k: statistics.median(r[k] for r in runs) if all(r[k] is not None for r in runs) else None for k in keys
            } | {"runs": len(runs)}
        if {"lean", "reference"} <= by_path.keys():
            lean, ref = row["lean"], row["reference"]
            row["reference_over_lean"] = {k: ref[k] / lean[k] if lean[k] and ref[k] is not None else None for k in keys}
        rows.append(row)
    return rows


if __name__ == "__main__":
    run_stage(main)
