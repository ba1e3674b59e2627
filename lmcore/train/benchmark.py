"""Training throughput benchmark: the real training step (objective, trainer, optimizer) on synthetic tokens.

Each (architecture, size, loss path) runs in a fresh child process, so peak memory belongs to that configuration
alone and a CUDA out-of-memory in one does not end the others. Besides the whole step, the objective's loss path
(forward + backward of `objective.loss`, no optimizer) is timed and its peak memory measured on its own.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmcore.config import TrainConfig
from lmcore.models import resolve_model_config
from lmcore.objectives import get_objective
from lmcore.tokenizer import IGNORE_ID
from lmcore.train.checkpoint import RunInfo
from lmcore.train.device import amp_dtype, resolve_device
from lmcore.train.perf import estimate_train_memory, flops_per_token, peak_flops, peak_memory
from lmcore.train.tracking import Tracker
from lmcore.train.trainer import Trainer, step_generator


@dataclass
class BenchConfig:
    """One benchmark configuration (the CLI's flags)."""

    architecture: str = "ar"
    size: str = "small"
    seq_len: int = 1024
    batch_size: int = 16
    grad_accum_steps: int = 1
    steps: int = 20
    warmup: int = 5  # untimed steps first (compilation, allocator warm-up)
    vocab_size: int = 32000
    compile: bool = False
    gradient_checkpointing: bool = False
    dtype: str = "auto"
    device: str = "auto"
    sdd_k: int = 4  # candidates per position for sdd (its curriculum's k, fixed here)
    loss_path: str = "lean"  # lean | reference (lmcore/objectives/losses.py)
    loss_steps: int = 3  # timed forward + backward passes of the loss path alone, after the training steps


def run_one(b: BenchConfig) -> dict[str, Any]:
    """Time `steps` optimizer steps after `warmup` untimed ones; tokens/s, MFU, peak memory and the shape."""
    section = {"fixed_k": b.sdd_k} if b.architecture == "sdd" else {}
    objective = get_objective(b.architecture, section)
    objective.loss_path = b.loss_path
    model_cfg = objective.model_config(resolve_model_config(b.size), b.vocab_size, b.seq_len, b.gradient_checkpointing)
    cfg = TrainConfig(
        max_steps=b.warmup + b.steps,
        batch_size=b.batch_size,
        seq_len=b.seq_len,
        grad_accum_steps=b.grad_accum_steps,
        warmup_steps=1,
        learning_rate=1e-4,
        num_samples=0,
        compile=b.compile,
        gradient_checkpointing=b.gradient_checkpointing,
        dtype=b.dtype,
        device=b.device,
        wandb=False,
    )
    device = resolve_device(b.device)
    baseline = _current_rss_mib()  # the interpreter and libraries, before the model exists
    width = b.seq_len + objective.extra_tokens
    gen = torch.Generator().manual_seed(0)
    # Tokens above the special ids; fixed rows, so the timed loop measures the model, not the data pipeline.
    rows = torch.randint(IGNORE_ID + 1, b.vocab_size, (b.batch_size, width), generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            objective,
            model_cfg,
            cfg,
            lambda step, micro: {"tokens": rows},
            [],
            Path(tmp),
            RunInfo(b.architecture, {}, "synthetic"),
            Tracker(),
        )
        for _ in range(b.warmup):
            trainer.train_step()
            trainer.step += 1
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(b.steps):
            metrics = trainer.train_step()
            trainer.step += 1
        _sync(device)
        elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        loss_path = loss_path_cost(trainer, b.loss_steps)
    tokens_per_sec = b.steps * trainer.tokens_per_step / elapsed
    k = objective.slots_per_position()
    fpt = flops_per_token(model_cfg, b.seq_len, k)
    peak = peak_flops(device)
    amp = amp_dtype(cfg.dtype, device) is not None
    estimate = estimate_train_memory(
        model_cfg, b.batch_size, b.seq_len, b.gradient_checkpointing, amp, k, loss_path=b.loss_path
    )
    return {
        **dataclasses.asdict(b),
        "device": _device_name(device),
        "params": trainer.model.num_params(),
        "non_embedding_params": trainer.model.num_params(non_embedding=True),
        "model": {f: getattr(model_cfg, f) for f in ("d_model", "n_heads", "n_layers", "d_ff")},
        "slots_per_position": k,
        "tokens_per_step": trainer.tokens_per_step,
        "step_time_ms": 1000 * elapsed / b.steps,
        # CPU seconds of this process (all its threads) per step: on a shared CPU, wall time also counts the
        # time other processes held the cores, CPU time does not (on CUDA it is the host's share only).
        "step_cpu_time_ms": 1000 * cpu_elapsed / b.steps,
        "tokens_per_sec": tokens_per_sec,
        "flops_per_token": fpt,
        "achieved_tflops": tokens_per_sec * fpt / 1e12,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "mfu": tokens_per_sec * fpt / peak if peak else None,
        **peak_memory(device),
        **({"baseline_rss_mib": baseline} if device.type == "cpu" else {}),
        "estimated_peak_memory_mib": estimate["total_bytes"] / 2**20,
        **loss_path,
        "final_loss": float(metrics["train/loss"]),
    }


def loss_path_cost(trainer: Trainer, steps: int) -> dict[str, float | None]:
    """Time per pass and peak memory of the objective's loss path alone: forward + backward of `objective.loss`
    on the trainer's batch, no optimizer. The peak is above the memory in use before the pass: CUDA's allocator
    peak, or on CPU the process's resident peak, reset through /proc/self/clear_refs (Linux; None where that is
    refused). CPU resident memory also holds what the allocator keeps after frees, so it is the coarser of the two.
    """
    device, cfg = trainer.device, trainer.cfg
    batch = {k: v.to(device) for k, v in trainer.train_batches(trainer.step, 0).items()}
    amp = amp_dtype(cfg.dtype, device)
    trainer.optimizer.zero_grad(set_to_none=True)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = _proc_status_mib("VmRSS") if _reset_peak_rss() else None
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        gen = step_generator(cfg.seed, trainer.step, 0, device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _ = trainer.objective.loss(trainer.forward_model, batch, gen)
        loss.backward()
        trainer.optimizer.zero_grad(set_to_none=True)
    _sync(device)
    elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - before
    else:
        high = _proc_status_mib("VmHWM")
        peak = high - before if before is not None and high is not None else None
    return {
        "loss_path_ms": 1000 * elapsed / steps if steps else None,
        "loss_path_cpu_ms": 1000 * cpu_elapsed / steps if steps else None,
        "loss_path_peak_mib": peak,
    }


def _child(b: BenchConfig, queue: Any) -> None:
    try:
        queue.put(run_one(b))
    except torch.cuda.OutOfMemoryError:
        queue.put({**dataclasses.asdict(b), "error": "CUDA out of memory"})
    except Exception as e:
        queue.put(
            {
                **dataclasses.asdict(b),
                "error": f"{e.__class__.__name__}: {e}",
                "traceback": traceback.format_exc(limit=5),
            }
        )


def run_isolated(b: BenchConfig, timeout: float = 3600.0) -> dict[str, Any]:
    """run_one in a fresh child process (spawned, so CUDA state and peak RSS start clean)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(b, queue))
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:
        result = {
            **dataclasses.asdict(b),
            "error": f"benchmark process ended without a result (exit code {proc.exitcode})",
        }
    proc.join(timeout=60)
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _current_rss_mib() -> float | None:
    """This process's resident memory now (Linux), to tell the model's share of a CPU peak from the runtime's."""
    return _proc_status_mib("VmRSS")


def _proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: resident peak) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's resident peak (VmHWM) to its current resident size (Linux ≥ 4.0); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
