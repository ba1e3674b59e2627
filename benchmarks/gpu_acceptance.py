"""One-shot GPU acceptance run: correctness, training throughput/MFU/memory, sampling speed and a short real run,
with the project's GPU goals printed next to the measured numbers. One command, at most 8 minutes on one
H100/H200:

    python benchmarks/gpu_acceptance.py --out results/gpu_acceptance
    python benchmarks/gpu_acceptance.py --smoke --out /tmp/acceptance      # tiny shapes on CPU: the script runs

It writes `acceptance.json` (every number, every error) and `acceptance.md` (the same as tables) to --out.
It needs only torch, numpy, tokenizers and pyyaml (and lmcore): nothing on its import path imports dvc, dvclive,
wandb, datasets or rouge-score (tests/test_gpu_acceptance.py runs it with those modules blocked).

Sections, each with its own time cap (seconds, scaled by --time_scale) so that the whole stays within 8 minutes;
work that does not start before its section's cap is reported as skipped, never silently left out:
  correctness (60)  bf16 autocast training step per architecture (finite loss and gradient norm); SDPA runs
                    with only the flash/cuDNN backends allowed (`torch.nn.attention.sdpa_kernel`) for AR and
                    diffusion (and which fused backends take SDD's additive key bias); compiled loss equals eager.
  throughput (230)  tokens/s, MFU and peak memory of the compiled training step (bf16, fused AdamW) for ar,
                    diffusion and sdd (k = 4) at the reference shapes, and the bidirectional backbone alone on
                    L·k tokens (what SDD's cost is compared with).
  sampling (80)     AR KV-cache decoding (compiled, CUDA graphs) vs diffusion and SDD at 16/64 steps, batch 1 and
                    64, `small`, 256 tokens; the HBM-bandwidth bound for AR decoding at batch 64.
  real_run (90)     builtin:stories prepared here, `small` AR trained a few hundred steps in bf16, its validation
                    loss against the corpus' entropy floor.
Models are compiled per block ("regional compilation", lmcore/train/compiling.py): all layers share one compiled
graph, so compile time is one block's, which is what makes 16 compiled configurations fit the time budget.
MFU = tokens/s × FLOPs per token / the device's dense bf16 peak (lmcore/train/perf.py: MFU_FORMULA).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from lmcore.config import TrainConfig  # noqa: E402
from lmcore.models import ModelConfig, resolve_model_config  # noqa: E402
from lmcore.objectives import get_objective  # noqa: E402
from lmcore.tokenizer import IGNORE_ID  # noqa: E402
from lmcore.train.checkpoint import RunInfo  # noqa: E402
from lmcore.train.compiling import compile_model  # noqa: E402
from lmcore.train.device import autocast  # noqa: E402
from lmcore.train.perf import (  # noqa: E402
    MFU_FORMULA,
    decode_bound_tokens_per_sec,
    memory_bandwidth_for_name,
    mfu,
    peak_flops,
)
from lmcore.train.tracking import Tracker  # noqa: E402
from lmcore.train.trainer import Trainer, step_generator  # noqa: E402

ARCHITECTURES = ("ar", "diffusion", "sdd")
SDD_K = 4
SECTION_CAPS = {"correctness": 60.0, "throughput": 230.0, "sampling": 80.0, "real_run": 90.0}
TOTAL_BUDGET_S = 480.0  # the 8 minutes
# nanoGPT's GPT on one H100 with torch.compile + bf16 (the reference figures, tokens/s); the goal is 1.2×.
NANOGPT_TOKENS_PER_S = {"gpt124m": 451e3, "xl": 187e3, "xl_gc": 187e3, "small": 3.07e6}
AR_OVER_NANOGPT_GOAL = 1.2
DIFFUSION_OVER_AR_GOAL = 1.0
SDD_OVER_BACKBONE_GOAL = 1.15
DECODE_WITHIN_BOUND_GOAL = 2.0
BF16_RTOL = 2e-2  # compiled vs eager loss: bf16 has 8 mantissa bits (relative step 2^-8 ≈ 0.4 %) per rounding


@dataclass(frozen=True)
class Shape:
    """One reference training shape."""

    name: str
    model: ModelConfig
    seq_len: int
    batch_size: int
    vocab_size: int
    gradient_checkpointing: bool = False


def reference_shapes(smoke: bool) -> list[Shape]:
    """The issue's reference shapes (GPU), or tiny stand-ins with the same structure (smoke)."""
    if smoke:  # one shape per code path: plain, and gradient checkpointing (under regional compile)
        tiny = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64)
        return [
            Shape("xl_gc", tiny, 16, 2, 256, gradient_checkpointing=True),
            Shape("small", tiny, 16, 2, 128),
        ]
    gpt124m = ModelConfig(d_model=768, n_heads=12, n_layers=12, d_ff=3072)
    return [
        Shape("gpt124m", gpt124m, 1024, 16, 50304),
        Shape("small", resolve_model_config("small"), 256, 256, 8192),
        Shape("xl", resolve_model_config("xl"), 1024, 16, 32000),
        Shape("xl_gc", resolve_model_config("xl"), 1024, 16, 32000, gradient_checkpointing=True),
    ]


class Clock:
    """Wall-clock caps: one per section, and the whole run's."""

    def __init__(self, scale: float) -> None:
        self.start, self.scale = time.perf_counter(), scale
        self.section_start, self.section_cap = self.start, 0.0

    def begin(self, section: str) -> None:
        self.section_start, self.section_cap = time.perf_counter(), SECTION_CAPS[section] * self.scale

    def left(self) -> float:
        """Seconds left in the current section (and never beyond the whole run's budget)."""
        now = time.perf_counter()
        section = self.section_cap - (now - self.section_start)
        return min(section, TOTAL_BUDGET_S * self.scale - (now - self.start))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _error(e: BaseException) -> dict[str, str]:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return {"error": "CUDA out of memory"}
    return {"error": f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}


def build_trainer(
    arch: str, shape: Shape, device: torch.device, dtype: str, tmp: Path, seq_len: int | None = None
) -> Trainer:
    """The project's Trainer (the real step: objective loss, backward, clipping, fused AdamW on CUDA) on fixed
    synthetic rows of `shape` (`seq_len` overrides the row length: the backbone on L·k tokens)."""
    objective = get_objective(arch, {"fixed_k": SDD_K} if arch == "sdd" else {})
    length = seq_len or shape.seq_len
    cfg = objective.model_config(shape.model, shape.vocab_size, length, shape.gradient_checkpointing)
    train = TrainConfig(
        max_steps=10**6,
        batch_size=shape.batch_size,
        seq_len=length,
        warmup_steps=1,
        learning_rate=1e-4,
        num_samples=0,
        gradient_checkpointing=shape.gradient_checkpointing,
        dtype=dtype,
        device=str(device),
        wandb=False,
    )
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(
        IGNORE_ID + 1, shape.vocab_size, (shape.batch_size, length + objective.extra_tokens), generator=gen
    )
    return Trainer(
        objective, cfg, train, lambda step, micro: {"tokens": rows}, [], tmp, RunInfo(arch, {}, "synthetic"), Tracker()
    )


# ---------------------------------------------------------------------------------------------- correctness
def check_correctness(shapes: list[Shape], device: torch.device, backend: str, clock: Clock, tmp: Path) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # The `small` reference shape (the shortest context) at a small batch: correctness, not speed.
    shape = next(s for s in shapes if s.name == "small")
    shape = dataclasses.replace(shape, batch_size=min(shape.batch_size, 8))
    fused = [SDPBackend.FLASH_ATTENTION] + ([SDPBackend.CUDNN_ATTENTION] if device.type == "cuda" else [])
    out: dict[str, Any] = {"shape": _shape_row(shape), "sdpa_allowed": [b.name for b in fused]}
    for arch in ARCHITECTURES:
        if clock.left() <= 0:
            out[arch] = {"skipped": "section time cap"}
            continue
        try:
            out[arch] = _correctness_of(arch, shape, device, backend, tmp, fused, sdpa_kernel)
        except Exception as e:  # one architecture's failure is reported, the others still run
            out[arch] = {**_error(e), "traceback": traceback.format_exc(limit=4)}
        _free(device)
    return out


def _correctness_of(
    arch: str, shape: Shape, device: torch.device, backend: str, tmp: Path, fused: list, sdpa_kernel: Any
) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend

    trainer = build_trainer(arch, shape, device, "bf16", tmp)
    metrics = trainer.train_step()
    loss, norm = float(metrics["train/loss"]), float(metrics["train/grad_norm"])
    row: dict[str, Any] = {
        "bf16_step": {"loss": loss, "grad_norm": norm, "finite": math.isfinite(loss) and math.isfinite(norm)}
    }
    batch = {k: v.to(device) for k, v in trainer.train_batches(0, 0).items()}

    def loss_of() -> float:  # forward + backward of the objective's loss on one fixed batch and noise
        with autocast(device, torch.bfloat16):
            value, _ = trainer.objective.loss(trainer.model, batch, step_generator(0, 0, 0, device))
        value.backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        return float(value)

    if arch != "sdd":
        row["sdpa_flash_or_cudnn"] = _sdpa_check(loss_of, sdpa_kernel, fused)
    else:  # SDD's additive key bias is an attention mask, which flash takes none of (see Attention)
        with_bias = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        row["sdpa_fused_with_key_bias"] = {b.name: _sdpa_check(loss_of, sdpa_kernel, [b])["ok"] for b in with_bias}
    eager = loss_of()
    compile_model(trainer.model, dynamic=trainer.objective.compile_dynamic, backend=backend, regional=True)
    compiled = loss_of()
    row["compiled_vs_eager"] = {
        "eager": eager,
        "compiled": compiled,
        "rel_diff": abs(compiled - eager) / max(abs(eager), 1e-12),
        "ok": abs(compiled - eager) <= BF16_RTOL * abs(eager),
    }
    return row


def _sdpa_check(run: Callable[[], float], sdpa_kernel: Any, backends: list) -> dict[str, Any]:
    """Run forward + backward with only `backends` allowed: SDPA raises when none of them can take the call."""
    try:
        with sdpa_kernel(backends):
            run()
        return {"ok": True}
    except RuntimeError as e:
        return {"ok": False, "error": str(e).splitlines()[0][:300]}


# ---------------------------------------------------------------------------------------------- throughput
def measure_training(
    arch: str,
    shape: Shape,
    device: torch.device,
    dtype: str,
    backend: str,
    tmp: Path,
    seconds: float,
    seq_len: int | None = None,
    min_steps: int = 3,
) -> dict[str, Any]:
    """Compiled training steps: 2 untimed (compilation), then timed ones for ~`seconds` (`min_steps` to 20)."""
    trainer = build_trainer(arch, shape, device, dtype, tmp, seq_len)
    compile_model(trainer.model, dynamic=trainer.objective.compile_dynamic, backend=backend, regional=True)
    for _ in range(2):
        trainer.train_step()
        trainer.step += 1
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, steps = time.perf_counter(), 0
    while steps < min_steps or (steps < 20 and time.perf_counter() - start < seconds):
        metrics = trainer.train_step()
        trainer.step += 1
        steps += 1
        _sync(device)  # per step: the loop decides when to stop (a few µs against a step of milliseconds)
    elapsed = time.perf_counter() - start
    k = trainer.objective.slots_per_position()
    tokens_per_sec = steps * trainer.tokens_per_step / elapsed
    util = mfu(tokens_per_sec, trainer.model_cfg, trainer.cfg.seq_len, device, k, architecture=arch)
    row = {
        "step_ms": 1000 * elapsed / steps,
        "tokens_per_sec": tokens_per_sec,
        "mfu": util,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "steps": steps,
        "final_loss": float(metrics["train/loss"]),
        "params": trainer.model.num_params(),
    }
    del trainer
    return row


def run_throughput(
    shapes: list[Shape], device: torch.device, dtype: str, backend: str, clock: Clock, tmp: Path
) -> dict:
    out: dict[str, Any] = {}
    per_run, min_steps = (3.0, 3) if device.type == "cuda" else (0.0, 1)  # CPU: the smoke check, not a speed
    for shape in shapes:
        rows: dict[str, Any] = {"shape": _shape_row(shape)}
        jobs = [(arch, None) for arch in ARCHITECTURES] + [("backbone_at_Lk", shape.seq_len * SDD_K)]
        for name, seq_len in jobs:
            if clock.left() <= 0:
                rows[name] = {"skipped": "section time cap"}
                continue
            arch = "diffusion" if name == "backbone_at_Lk" else name  # the bidirectional backbone SDD runs on
            try:
                rows[name] = measure_training(arch, shape, device, dtype, backend, tmp, per_run, seq_len, min_steps)
            except Exception as e:
                rows[name] = _error(e)
            _free(device)
        out[shape.name] = rows
    return out


# ---------------------------------------------------------------------------------------------- sampling
def run_sampling(smoke: bool, device: torch.device, backend: str, clock: Clock) -> dict:
    """Tokens/s of each sampler on a randomly initialised `small` model (speed does not depend on the weights)."""
    from lmcore.objectives import decode

    decode.BACKEND = backend
    preset = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64) if smoke else resolve_model_config("small")
    length, vocab = (16, 256) if smoke else (256, 32000)
    batches = (1, 2) if smoke else (1, 64)
    sampling_steps = (2, 4) if smoke else (16, 64)
    out: dict[str, Any] = {"length": length, "vocab_size": vocab, "model": _model_row(preset)}
    dtype = torch.bfloat16 if device.type == "cuda" else None
    for arch, steps_list in (("ar", (None,)), ("diffusion", sampling_steps), ("sdd", sampling_steps)):
        section = {"fixed_k": SDD_K} if arch == "sdd" else ({"compile_decode": True} if arch == "ar" else {})
        objective = get_objective(arch, section)
        cfg = objective.model_config(preset, vocab, length, False)
        torch.manual_seed(0)
        model = objective.build_model(cfg).to(device).eval()
        if arch != "ar":  # AR compiles its decode step itself (compile_decode)
            compile_model(model, dynamic=False, backend=backend, regional=True)
        for steps in steps_list:
            for batch in batches:
                key = f"{arch}" + (f"_{steps}steps" if steps else "") + f"_batch{batch}"
                if clock.left() <= 0:
                    out[key] = {"skipped": "section time cap"}
                    continue
                try:
                    out[key] = _time_sampler(objective, model, batch, length, steps, device, dtype)
                except Exception as e:
                    out[key] = _error(e)
        del model
        _free(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    bandwidth = memory_bandwidth_for_name(name) if name else None
    ar_cfg = get_objective("ar").model_config(preset, vocab, length, False)
    big = batches[-1]
    out["ar_decode_bound"] = {
        "batch": big,
        "hbm_bytes_per_s": bandwidth,
        "tokens_per_sec": decode_bound_tokens_per_sec(ar_cfg, big, length, bandwidth) if bandwidth else None,
        "device": name,
    }
    return out


def _time_sampler(
    objective: Any, model: torch.nn.Module, batch: int, length: int, steps: int | None, device: torch.device, dtype
) -> dict[str, Any]:
    """One untimed generation (compilation, allocator), then one timed; tokens/s = batch × length / seconds."""
    gen = torch.Generator(device=device)
    with torch.no_grad(), autocast(device, dtype):
        for _ in range(2):
            gen.manual_seed(0)
            _sync(device)
            start = time.perf_counter()
            ids = objective.sample(model, batch, length, gen, steps=steps)
            _sync(device)
            elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "tokens_per_sec": batch * length / elapsed, "shape": list(ids.shape)}


# ---------------------------------------------------------------------------------------------- real run
def run_real(smoke: bool, device: torch.device, dtype: str, clock: Clock, tmp: Path) -> dict:
    """builtin:stories prepared here; `small` AR for a few hundred bf16 steps; val loss vs the entropy floor."""
    from lmcore.data import load_meta, prepare_corpus
    from lmcore.train.run import Outputs, pretrain

    data = tmp / "stories"
    t0 = time.perf_counter()
    prepare_corpus(
        "builtin:stories",
        data,
        vocab_size=512 if smoke else 2048,
        max_docs=400 if smoke else 30000,
        val_fraction=0.05 if smoke else 0.02,
        seed=0,
        progress=False,
    )
    prepare_s = time.perf_counter() - t0
    preset = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64) if smoke else resolve_model_config("small")
    steps = 6 if smoke else 400
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=4 if smoke else 64,
        seq_len=32 if smoke else 256,
        learning_rate=3e-3,
        warmup_steps=max(1, steps // 10),
        eval_every=steps,
        eval_batches=2 if smoke else 16,
        log_every=max(1, steps // 4),
        checkpoint_every=steps,
        num_samples=0,
        dtype=dtype,
        device=str(device),
        wandb=False,
    )
    t0 = time.perf_counter()
    final = pretrain(get_objective("ar"), preset, cfg, data, Outputs(tmp / "run"), "acceptance-ar-small")
    train_s = time.perf_counter() - t0
    floor = load_meta(data).get("entropy", {}).get("val", {}).get("nats_per_token")
    val = final.get("val/loss")
    return {
        "steps": steps,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "dtype": dtype,
        "prepare_seconds": prepare_s,
        "train_seconds": train_s,
        "val_loss": val,
        "entropy_floor": floor,
        "gap_nats": val - floor if val is not None and floor else None,
        "within_budget": clock.left() >= 0,
    }


# ---------------------------------------------------------------------------------------------- goals, report
def goals(report: dict) -> list[dict[str, Any]]:
    """The issue's GPU goals, each with the measured value, the target and whether it is met (None: not measured)."""
    rows = []
    tp = report["sections"].get("throughput", {})

    def tps(shape: str, name: str) -> float | None:
        return tp.get(shape, {}).get(name, {}).get("tokens_per_sec")

    for shape, ref in NANOGPT_TOKENS_PER_S.items():
        ar = tps(shape, "ar")
        ratio = ar / ref if ar else None
        rows.append(
            _goal(
                f"AR {shape}: tokens/s ÷ nanoGPT's {ref:,.0f}",
                ratio,
                f"≥ {AR_OVER_NANOGPT_GOAL}",
                ratio and ratio >= AR_OVER_NANOGPT_GOAL,
            )
        )
        diff = tps(shape, "diffusion")
        ratio = diff / ar if diff and ar else None
        rows.append(
            _goal(
                f"diffusion {shape}: tokens/s ÷ AR's",
                ratio,
                f"≥ {DIFFUSION_OVER_AR_GOAL}",
                ratio and ratio >= DIFFUSION_OVER_AR_GOAL,
            )
        )
        sdd = tp.get(shape, {}).get("sdd", {}).get("step_ms")
        base = tp.get(shape, {}).get("backbone_at_Lk", {}).get("step_ms")
        ratio = sdd / base if sdd and base else None
        rows.append(
            _goal(
                f"SDD k={SDD_K} {shape}: step time ÷ backbone on L·k",
                ratio,
                f"≤ {SDD_OVER_BACKBONE_GOAL}",
                ratio and ratio <= SDD_OVER_BACKBONE_GOAL,
            )
        )
    sampling = report["sections"].get("sampling", {})
    bound = sampling.get("ar_decode_bound", {})
    big = bound.get("batch")
    measured = sampling.get(f"ar_batch{big}", {}).get("tokens_per_sec")
    ratio = bound["tokens_per_sec"] / measured if measured and bound.get("tokens_per_sec") else None
    rows.append(
        _goal(
            f"AR decode batch {big}: bandwidth bound ÷ measured tokens/s",
            ratio,
            f"≤ {DECODE_WITHIN_BOUND_GOAL}",
            ratio and ratio <= DECODE_WITHIN_BOUND_GOAL,
        )
    )
    return rows


def _goal(name: str, measured: float | None, target: str, met: Any) -> dict[str, Any]:
    return {"goal": name, "measured": measured, "target": target, "met": None if measured is None else bool(met)}


def _shape_row(shape: Shape) -> dict[str, Any]:
    return {
        **_model_row(shape.model),
        "seq_len": shape.seq_len,
        "batch_size": shape.batch_size,
        "vocab_size": shape.vocab_size,
        "gradient_checkpointing": shape.gradient_checkpointing,
    }


def _model_row(cfg: ModelConfig) -> dict[str, int]:
    return {"layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_ff": cfg.d_ff}


def _num(x: Any, fmt: str = "{:,.3g}") -> str:
    if x is None:
        return "—"
    return fmt.format(x) if isinstance(x, (int, float)) else str(x)


def markdown(report: dict) -> str:
    """The report as markdown tables: goals first, then each section."""
    lines = [
        f"# GPU acceptance run: {report['device']}",
        "",
        f"torch {report['torch']}, {report['mode']} mode, {report['seconds']:.0f} s in all. {MFU_FORMULA}.",
        "",
        "## Goals",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for g in report["goals"]:
        met = {True: "yes", False: "NO", None: "not measured"}[g["met"]]
        lines.append(f"| {g['goal']} | {_num(g['measured'])} | {g['target']} | {met} |")
    sec = report["sections"]
    if "correctness" in sec:
        lines += [
            "",
            "## Correctness",
            "",
            "| architecture | bf16 step finite | SDPA | compiled vs eager (rel. diff) |",
            "| --- | --- | --- | --- |",
        ]
        for arch in ARCHITECTURES:
            row = sec["correctness"].get(arch, {})
            if "error" in row or "skipped" in row:
                lines.append(f"| {arch} | {row.get('error') or row.get('skipped')} | | |")
                continue
            sdpa = row.get("sdpa_flash_or_cudnn") or row.get("sdpa_fused_with_key_bias")
            comp = row["compiled_vs_eager"]
            lines.append(
                f"| {arch} | {row['bf16_step']['finite']} | {json.dumps(sdpa)} | "
                f"{comp['ok']} ({comp['rel_diff']:.2e}) |"
            )
    if "throughput" in sec:
        lines += [
            "",
            "## Training throughput (compiled, bf16)",
            "",
            "| shape | run | tokens/s | MFU | step ms | peak GiB |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for shape, rows in sec["throughput"].items():
            if not isinstance(rows, dict):
                continue
            for name, r in rows.items():
                if name == "shape":
                    continue
                if "error" in r or "skipped" in r:
                    lines.append(f"| {shape} | {name} | {r.get('error') or r.get('skipped')} | | | |")
                else:
                    lines.append(
                        f"| {shape} | {name} | {r['tokens_per_sec']:,.0f} | {_num(r['mfu'], '{:.1%}')} | "
                        f"{r['step_ms']:.1f} | {_num(r['peak_memory_gib'], '{:.1f}')} |"
                    )
    if "sampling" in sec:
        lines += ["", "## Sampling (`small`, tokens/s)", "", "| sampler | tokens/s | seconds |", "| --- | --- | --- |"]
        for name, r in sec["sampling"].items():
            if isinstance(r, dict) and ({"seconds", "error", "skipped"} & r.keys()):
                if "seconds" in r:
                    lines.append(f"| {name} | {r['tokens_per_sec']:,.0f} | {r['seconds']:.2f} |")
                else:
                    lines.append(f"| {name} | {r.get('error') or r.get('skipped')} | |")
        bound = sec["sampling"].get("ar_decode_bound", {})
        lines.append(
            f"| AR decode bandwidth bound, batch {bound.get('batch')} | "
            f"{_num(bound.get('tokens_per_sec'), '{:,.0f}')} | |"
        )
    if "real_run" in sec:
        r = sec["real_run"]
        lines += ["", "## Short real run (`small` AR on builtin:stories)", ""]
        if "error" in r:
            lines.append(f"error: {r['error']}")
        else:
            lines.append(
                f"{r['steps']} steps ({r['dtype']}), {r['train_seconds']:.0f} s: "
                f"val loss {_num(r['val_loss'], '{:.3f}')} "
                f"nats/token, entropy floor {_num(r['entropy_floor'], '{:.3f}')}, gap {_num(r['gap_nats'], '{:.3f}')}."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for acceptance.json and acceptance.md")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, a few steps: checks the script runs")
    p.add_argument(
        "--sections", default=",".join(SECTION_CAPS), help=f"comma-separated subset of {','.join(SECTION_CAPS)}"
    )
    p.add_argument("--time_scale", type=float, default=1.0, help="multiplies every time cap (default 1: 8 minutes)")
    p.add_argument(
        "--compile_backend", default=None, help="torch.compile backend (default inductor; aot_eager in --smoke)"
    )
    a = p.parse_args(argv)
    sections = [s for s in a.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTION_CAPS]
    if unknown or not sections:
        print(f"error: --sections: unknown '{','.join(unknown)}' (known: {','.join(SECTION_CAPS)})", file=sys.stderr)
        return 2
    if not a.time_scale > 0:
        print(f"error: --time_scale must be positive, got {a.time_scale}", file=sys.stderr)
        return 2
    if not a.smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA device: the acceptance run measures a GPU (use --smoke for the CPU check)", file=sys.stderr
        )
        return 2
    device = torch.device("cpu" if a.smoke else "cuda")
    dtype = "fp32" if a.smoke else "bf16"
    backend = a.compile_backend or ("aot_eager" if a.smoke else "inductor")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = reference_shapes(a.smoke)
    clock = Clock(a.time_scale)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"
    report: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "mode": "smoke" if a.smoke else "full",
        "compile_backend": backend,
        "peak_bf16_tflops": (peak_flops(device) or 0) / 1e12 or None,
        "mfu_formula": MFU_FORMULA,
        "sections": {},
    }
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (optimizer, norms) on tensor cores
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for section in sections:
            clock.begin(section)
            print(f"acceptance: {section} (cap {clock.left():.0f} s) ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                if section == "correctness":
                    result = check_correctness(shapes, device, backend, clock, tmp)
                elif section == "throughput":
                    result = run_throughput(shapes, device, dtype, backend, clock, tmp)
                elif section == "sampling":
                    result = run_sampling(a.smoke, device, backend, clock)
                else:
                    result = run_real(a.smoke, device, "fp32" if a.smoke else "bf16", clock, tmp)
            except Exception as e:  # a section's crash is a result too; the others still run
                result = {**_error(e), "traceback": traceback.format_exc(limit=6)}
            result["seconds"] = time.perf_counter() - start
            report["sections"][section] = result
            _free(device)
    report["seconds"] = time.perf_counter() - clock.start
    report["goals"] = goals(report)
    (out / "acceptance.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = markdown(report)
    (out / "acceptance.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
