"""The one training loop for every architecture and for fine-tuning.

AdamW, warmup + cosine LR, gradient clipping and accumulation, bf16 autocast on CUDA, validation and samples
every N steps, atomic checkpoints (`latest.pt`, `best.pt`) and exact resume: every batch and every noise draw is
a pure function of (seed, step, micro-step), and the checkpoint carries the optimizer, RNG and objective state.
Under torchrun the same loop runs data-parallel (DDP or FSDP2; lmcore/train/distributed.py): rank r's micro-step
m is shard m·W + r of the global batch, metrics are averaged over ranks, and only rank 0 logs and writes files.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcore.config import TrainConfig
from lmcore.errors import TrainingError
from lmcore.models import ModelConfig
from lmcore.objectives import Batch, Objective
from lmcore.train import distributed
from lmcore.train.checkpoint import (
    RunInfo,
    atomic_torch_save,
    build_checkpoint,
    check_resume,
    load_checkpoint,
    restore_rng,
)
from lmcore.train.compiling import compile_model
from lmcore.train.device import amp_dtype, autocast, resolve_device
from lmcore.train.distributed import DistInfo
from lmcore.train.nonfinite import NonFiniteGuard
from lmcore.train.optim import build_optimizer, lr_at
from lmcore.train.perf import flops_per_step, mfu
from lmcore.train.prefetch import BatchPrefetcher, next_micro
from lmcore.train.tracking import Tracker

BatchFn = Callable[[int, int], Batch]  # (step, micro) -> this rank's batch on CPU


def step_generator(seed: int, step: int, micro: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """A fresh generator for one micro-step's noise, so a resumed run draws exactly what an uninterrupted one did."""
    # SeedSequence takes non-negative words only; validation/sampling pass negative steps to stay disjoint.
    words = [seed % 2**64, step % 2**32, step // 2**32 % 2**32, micro, rank]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


class Trainer:
    """Trains `objective`'s model on batches from `train_batches`; evaluates on the fixed `val_batches`.

    Under torchrun, `train_batches(step, micro)` must return this rank's shard (see `corpus_batches`) and
    `tokens_per_step` counts one rank's tokens; `dist` defaults to the job torchrun started (or one process).
    """

    def __init__(
        self,
        objective: Objective,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        train_batches: BatchFn,
        val_batches: list[Batch],
        checkpoint_dir: Path,
        info: RunInfo,
        tracker: Tracker,
        decode: Callable[[list[int]], str] | None = None,
        tokens_per_step: int | None = None,
        init_state_dict: dict[str, torch.Tensor] | None = None,
        dist: DistInfo | None = None,
    ) -> None:
        self.objective, self.cfg, self.info, self.tracker, self.decode = objective, cfg, info, tracker, decode
        self.train_batches, self.val_batches = train_batches, val_batches
        self.checkpoint_dir = Path(checkpoint_dir)
        self.dist = dist or distributed.init_distributed(cfg.device)
        self.device = distributed.local_device(resolve_device(cfg.device), self.dist)
        # None for one process; else how the model is spread over ranks (train.parallel).
        self.parallel: str | None = cfg.parallel if self.dist.enabled else None
        self.amp_dtype = amp_dtype(cfg.dtype, self.device)
        torch.manual_seed(cfg.seed)
        if model_cfg.gradient_checkpointing != cfg.gradient_checkpointing:
            raise ValueError("the model config must be finalized with the run's gradient_checkpointing setting")
        self.model_cfg = model_cfg  # final (frozen): what the checkpoint stores
        self.model = objective.build_model(model_cfg).to(self.device)
        if init_state_dict is not None:  # fine-tuning starts from pretrained weights
            self.model.load_state_dict(init_state_dict)
        # DDP wraps the model; FSDP2 shards it in place (so the optimizer must be built after, on the shards).
        self.wrapped: nn.Module = (
            distributed.wrap_model(self.model, self.parallel, self.device, self.amp_dtype)
            if self.parallel
            else self.model
        )
        self.forward_model: nn.Module = (
            compile_model(
                self.wrapped,
                dynamic=objective.compile_dynamic,
                stages=len(set(objective.slots_schedule()[0])),
            )
            if cfg.compile
            else self.wrapped
        )
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        # The next micro-batch is built and copied while the device computes (CUDA; a plain call on CPU).
        self.batches = BatchPrefetcher(train_batches, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        per_rank = tokens_per_step or cfg.batch_size * cfg.seq_len * cfg.grad_accum_steps
        self.tokens_per_step = per_rank * self.dist.world_size
        self.step, self.best_val_loss = 0, math.inf
        # The objective's slots per position when best_val_loss was taken (SDD: the curriculum's k): losses at
        # another k are another task's, so best.pt is chosen within one curriculum stage (see _validate).
        self.best_val_slots: int | None = None
        # Compute is an axis of its own (comparisons at equal compute, not equal steps): the training FLOPs so far
        # (lmcore/train/perf.py, at each step's k for SDD) and the wall-clock seconds spent in training steps.
        self.train_flops, self.train_seconds = 0.0, 0.0
        self._flops_at_k: dict[int, float] = {}
        self.log_buffer: dict[str, list[float]] = {}
        self._stop_signal: int | None = None
        self.nonfinite = NonFiniteGuard(self.device)
        self.last_saved = "no checkpoint was written"  # named when a NaN/inf stops the run

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """The checkpoint dict (lmcore/train/checkpoint.py); under FSDP a collective whose full result is on rank 0."""
        model_sd, optim_sd = distributed.full_state_dicts(self.model, self.optimizer, self.parallel)
        return build_checkpoint(
            step=self.step,
            info=self.info,
            model_config=self.model_cfg,
            model_state=model_sd,
            optimizer_state=optim_sd,
            scaler_state=self.scaler.state_dict() if self.scaler else None,
            train_config=dataclasses.asdict(self.cfg),
            best_val_loss=self.best_val_loss,
            best_val_slots=self.best_val_slots,
            objective=self.objective,
            log_buffer=self.log_buffer,
            tracker_run_id=self.tracker.run_id,
            compute={"flops": self.train_flops, "seconds": self.train_seconds},
        )

    def save(self, name: str = "latest.pt") -> Path:
        """Write a checkpoint atomically into checkpoint_dir (rank 0 writes; every rank returns once it exists)."""
        path = self.checkpoint_dir / name
        self.nonfinite.check(self.last_saved)  # weights updated with a NaN/inf gradient are never written
        state = self.state() if self.dist.is_main or self.parallel == "fsdp" else None
        if self.dist.is_main:
            atomic_torch_save(state, path)
        distributed.barrier()
        if name == "latest.pt":
            self.last_saved = f"the last checkpoint is {path} at step {self.step}"
        return path

    def resume(self, path: str | Path) -> None:
        """Restore weights, optimizer, RNG, objective state and step from a checkpoint written by this trainer.

        Under torchrun every rank reads the file (it must be visible to every node)."""
        ckpt = load_checkpoint(path, map_location="cpu" if self.parallel == "fsdp" else self.device)
        check_resume(ckpt, self.info, self.model_cfg, str(path))
        distributed.load_state_dicts(
            self.model, self.optimizer, ckpt["model_state_dict"], ckpt["optimizer_state_dict"], self.parallel
        )
        if self.scaler is not None and "scaler_state_dict" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler_state_dict"])
        self.objective.load_state_dict(ckpt.get("objective_state", {}))
        restore_rng(ckpt)
        self.step, self.best_val_loss = ckpt["global_step"], ckpt["best_val_loss"]
        self.best_val_slots = ckpt.get("best_val_slots", self.objective.slots_per_position())
        self.log_buffer = ckpt.get("log_buffer", {})
        compute = ckpt.get("compute") or {}
        self.train_flops, self.train_seconds = float(compute.get("flops", 0.0)), float(compute.get("seconds", 0.0))
        self.last_saved = f"the last checkpoint is {path} at step {self.step}"

    # ---------------------------------------------------------------- evaluation
    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """val/loss, val/accuracy, val/perplexity (+ val/<x>_accuracy extras) over the fixed validation batches.

        Under DDP rank r scores batches r, r+W, ... and the sums are added up; batch i's noise depends on i only,
        so the result is the single-process one. Under FSDP every forward is a collective: all ranks score all."""
        self.model.eval()
        share = self.parallel == "ddp"
        mine = [i for i in range(len(self.val_batches)) if not share or i % self.dist.world_size == self.dist.rank]
        totals = validation_totals(
            self.objective, self.forward_model, self.val_batches, self.cfg.seed, self.device, self.amp_dtype, mine
        )
        self.model.train()
        if share:
            totals = distributed.all_reduce_sums(totals, self.device)
        return stats_to_metrics(totals, "val")

    @torch.no_grad()
    def samples(self) -> list[str]:
        """A few unconditional generations, decoded, for a look at what the model has learned (rank 0's list)."""
        if not self.cfg.num_samples or self.decode is None:
            return []
        # The DDP module is a full local copy, so rank 0 samples alone; FSDP forwards need every rank.
        if not self.dist.is_main and self.parallel != "fsdp":
            return []
        self.model.eval()
        gen = step_generator(self.cfg.seed, -2, self.step, self.device)
        with self._autocast():
            ids = self.objective.sample(self.model, self.cfg.num_samples, self.cfg.seq_len, gen)
        self.model.train()
        return [self.decode(row.tolist()) for row in ids] if self.dist.is_main else []

    # ---------------------------------------------------------------- training
    def _handle_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def train_step(self) -> dict[str, float | torch.Tensor]:
        """One optimizer step over grad_accum_steps micro-batches; returns this step's metrics (only
        train/skipped_steps when train.skip_nonfinite_steps skipped it).

        Loss, grad norm and the objective's metrics stay 0-dim device tensors, so a step makes no device→host
        read; fit() keeps them in `log_buffer` and `_flush_log` reads them once per `log_every` steps."""
        cfg = self.cfg
        extra = self.objective.on_step(self.step)
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, torch.Tensor] = {}
        metric_counts: dict[str, torch.Tensor] = {}
        world, rank = self.dist.world_size, self.dist.rank
        for micro in range(cfg.grad_accum_steps):
            batch = self.batches.get(self.step, micro)
            # Noise of shard m·W + r: W ranks draw what one process with W times the micro-steps would.
            gen = step_generator(cfg.seed, self.step, micro * world + rank, self.device)
            last_micro = micro == cfg.grad_accum_steps - 1
            with distributed.gradient_sync(self.wrapped, last_micro):  # forward and backward both inside
                with self._autocast():
                    loss, metrics = self.objective.loss(self.forward_model, batch, gen)
                scaled = loss / cfg.grad_accum_steps
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            # Forward and backward are queued: build the next micro-batch while the device runs them.
            self.batches.prefetch(*next_micro(self.step, micro, cfg.grad_accum_steps))
            self.nonfinite.observe(loss)
            loss_sum += loss.detach().float()
            for k, v in metrics.items():  # NaN: nothing to score in this micro-batch, left out of the mean
                scored = ~v.isnan()
                metric_sums[k] = metric_sums.get(k, 0.0) + torch.where(scored, v.float(), 0.0)
                metric_counts[k] = metric_counts.get(k, 0) + scored.int()
        if self.parallel == "fsdp":
            distributed.average_replicated_grads(self.model)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
            grad_norm = grad_norm.full_tensor()
        if self.scaler is None:  # fp16: the GradScaler skips overflowing steps itself
            self.nonfinite.observe(grad_norm)
        if cfg.skip_nonfinite_steps and not self.nonfinite.step_is_finite():
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()  # closes the step it unscaled, as scaler.step would have
            return {"train/skipped_steps": 1.0}
        self.nonfinite.end_step(self.step + 1)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        out: dict[str, float | torch.Tensor] = {
            "train/loss": loss_sum / cfg.grad_accum_steps,
            "train/lr": lr,
            "train/grad_norm": grad_norm.detach(),
        }
        out.update({f"train/{k}": metric_sums[k] / metric_counts[k] for k in metric_sums})  # 0/0 = NaN: none
        out.update({f"train/{k}": v for k, v in extra.items()})
        if cfg.skip_nonfinite_steps:
            out["train/skipped_steps"] = 0.0
        return out

    def fit(self) -> dict[str, float]:
        """Train to max_steps, or stop_at_step if set (from a resumed step if any); returns the last logged metrics."""
        cfg, last = self.cfg, {}
        end = cfg.stop_at_step or cfg.max_steps
        old_handlers = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.model.train()
        try:
            interval_start, interval_tokens = time.perf_counter(), 0
            while self.step < end:
                metrics = self.train_step()
                self.train_flops += self.step_flops()
                self.step += 1
                interval_tokens += self.tokens_per_step
                for k, v in metrics.items():
                    self.log_buffer.setdefault(k, []).append(v)
                if self.step % cfg.log_every == 0 or self.step == end:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    elapsed = time.perf_counter() - interval_start
                    self.train_seconds += elapsed
                    last = self._flush_log(interval_tokens / max(elapsed, 1e-9))
                    interval_start, interval_tokens = time.perf_counter(), 0
                if self.step % cfg.eval_every == 0 or self.step == end:
                    last.update(self._validate())
                    interval_start = time.perf_counter()  # validation time is not training throughput
                saved = self.step % cfg.checkpoint_every == 0 or self.step == end
                if saved:
                    self.save()
                # Ranks may see a signal at different steps; they agree to stop after the same one.
                stop = self._stop_signal is not None
                if self.dist.enabled:
                    stop = distributed.any_rank(stop, self.device)
                if stop:
                    path = self.save() if not saved else self.checkpoint_dir / "latest.pt"
                    signum = self._stop_signal or signal.SIGTERM
                    if self.dist.is_main:
                        print(
                            f"{signal.Signals(signum).name} received: checkpoint at step {self.step} saved to "
                            f"{path}; continue with --resume_from {path}",
                            file=sys.stderr,
                            flush=True,
                        )
                    raise SystemExit(128 + signum)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        return last

    def _flush_log(self, tokens_per_sec: float) -> dict[str, float]:
        # The buffer holds each step's values: 0-dim device tensors from train_step (a checkpoint may bring them
        # back on another device) and Python numbers (lr, objective extras). Tensors are summed on the device,
        # skipping NaN (nothing scored that step), and read back with one .tolist() for the whole interval.
        sums: dict[str, float] = {}
        reduced: dict[str, torch.Tensor] = {}
        for k, values in self.log_buffer.items():
            numbers = [float(v) for v in values if not torch.is_tensor(v)]
            sums[f"sum:{k}"], sums[f"n:{k}"] = sum(numbers), float(len(numbers))
            tensors = [v.to(self.device, torch.float64) for v in values if torch.is_tensor(v)]
            if tensors:
                x = torch.stack(tensors)
                scored = ~x.isnan()
                reduced[k] = torch.stack((torch.where(scored, x, 0.0).sum(), scored.sum().double()))
        if self.dist.enabled:
            self.nonfinite.check(self.last_saved)  # agreed over ranks (an all-reduce); then one read below
        # The non-finite guard's first bad step travels in the same read as the sums (as a float64: exact below 2^53).
        first_bad = self.nonfinite.first_bad.to(torch.float64)
        rows = [*reduced.values(), torch.stack((first_bad, first_bad))]
        *values, (bad, _) = torch.stack(rows).tolist()
        self.nonfinite.raise_if_bad(int(bad), self.last_saved)
        for k, (total, n) in zip(reduced, values):
            sums[f"sum:{k}"] += total
            sums[f"n:{k}"] += n
        if self.dist.enabled:  # the mean over every rank's steps
            sums = distributed.all_reduce_sums(sums, self.device)
        metrics = {
            k[4:]: v / sums[f"n:{k[4:]}"] for k, v in sums.items() if k.startswith("sum:") and sums[f"n:{k[4:]}"] > 0
        }
        self.log_buffer = {}
        if "train/skipped_steps" in metrics:  # a count over the interval, not a mean
            metrics["train/skipped_steps"] = sums["sum:train/skipped_steps"]
        if "train/loss" in metrics:  # absent when every step of the interval was skipped
            metrics["train/perplexity"] = math.exp(min(metrics["train/loss"], 50.0))
        metrics["train/tokens_per_sec"] = tokens_per_sec
        metrics["train/flops"], metrics["train/seconds"] = self.train_flops, self.train_seconds
        util = mfu(
            tokens_per_sec / self.dist.world_size,
            self.model_cfg,
            self.cfg.seq_len,
            self.device,
            self.objective.slots_per_position(),
            architecture=self.objective.name,
        )
        if util is not None:
            metrics["train/mfu"] = util
        self.tracker.log(metrics, self.step)
        return metrics

    def step_flops(self) -> float:
        """Training FLOPs of one optimizer step of the whole job at the objective's current slots (SDD's k)."""
        k = self.objective.slots_per_position()
        if k not in self._flops_at_k:
            self._flops_at_k[k] = flops_per_step(
                self.model_cfg, self.cfg.seq_len, self.tokens_per_step, k, architecture=self.objective.name
            )
        return self._flops_at_k[k]

    def _validate(self) -> dict[str, float]:
        self.nonfinite.check(self.last_saved)  # NaN weights would only crash the sampler
        metrics = self.evaluate()
        if not math.isfinite(metrics["val/loss"]):  # e.g. weights blown up by steps that were themselves finite
            raise TrainingError(
                f"training stopped: the validation loss is {metrics['val/loss']} at step {self.step}; "
                f"nothing after it was saved ({self.last_saved})"
            )
        slots = self.objective.slots_per_position()
        if slots != self.best_val_slots:  # a new curriculum stage: earlier stages' losses measure another task
            self.best_val_loss, self.best_val_slots = math.inf, slots
        if metrics["val/loss"] < self.best_val_loss:
            self.best_val_loss = metrics["val/loss"]
            self.save("best.pt")
        metrics["val/best_loss"] = self.best_val_loss
        # The compute spent when this validation was taken: `dvc plots` and W&B draw val/loss against it.
        metrics["val/flops"], metrics["val/seconds"] = self.train_flops, self.train_seconds
        self.tracker.log(metrics, self.step)
        self.tracker.log_samples(self.samples(), self.step)
        return metrics


@torch.no_grad()
def validation_totals(
    objective: Objective,
    model: nn.Module,
    batches: list[Batch],
    seed: int,
    device: torch.device,
    dtype: torch.dtype | None,
    indices: list[int] | None = None,
) -> dict[str, float]:
    """Summed `eval_stats` over validation batches (all, or `indices`), batch i always with the same noise.

    The trainer's validation and the evaluation stage both call this, so evaluating a best.pt reproduces its
    best_val_loss."""
    totals: dict[str, float] = {}
    for i in range(len(batches)) if indices is None else indices:
        gen = step_generator(seed, -1, i, device)  # the same noise at every evaluation
        with autocast(device, dtype):
            stats = objective.eval_stats(model, _to(batches[i], device), gen)
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v
    return totals


def stats_to_metrics(totals: dict[str, float], prefix: str) -> dict[str, float]:
    """Summed eval statistics → metrics. `loss_sum/count` is the loss; accuracy is `correct/acc_count` (or
    `/count`); every extra `<x>_correct`/`<x>_count` pair becomes `<prefix>/<x>_accuracy`, and every extra
    `<x>_loss_sum`/`<x>_count` pair `<prefix>/<x>_loss` (AR's loss on packed windows). An extra pair that scored
    nothing (e.g. no packed windows for an AR trained on document rows) is left out: 0/0 is no measurement."""
    loss = totals["loss_sum"] / max(totals["count"], 1)
    out = {
        f"{prefix}/loss": loss,
        f"{prefix}/perplexity": math.exp(min(loss, 50.0)),
        f"{prefix}/accuracy": totals["correct"] / max(totals.get("acc_count", totals["count"]), 1),
    }
    for key, value in totals.items():
        for suffix, metric in (("_correct", "accuracy"), ("_loss_sum", "loss")):
            name = key.removesuffix(suffix)
            if key.endswith(suffix) and totals.get(f"{name}_count"):
                out[f"{prefix}/{name}_{metric}"] = value / totals[f"{name}_count"]
    return out


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
