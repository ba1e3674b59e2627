"""Wiring for a pretraining run: prepared corpus + objective + trackers → Trainer. Stage scripts call this."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcore.config import TrainConfig
from lmcore.data import DocumentSampler, MemmapCorpus, WindowSampler, eval_documents, eval_windows, load_meta
from lmcore.models import ModelConfig
from lmcore.objectives import Objective
from lmcore.tokenizer import decode, load_tokenizer
from lmcore.train import distributed
from lmcore.train.checkpoint import RunInfo, check_resume, load_checkpoint
from lmcore.train.trainer import BatchFn, Trainer
from lmcore.train.tracking import (
    ConsoleTracker, DVCLiveTracker, JsonlTracker, MetricsFileTracker, MultiTracker, Tracker, WandbTracker,
)


@dataclass
class Outputs:
    """Where a run writes: checkpoints (+ history.jsonl), the DVC metrics JSON and the DVCLive plots folder."""

    checkpoint_dir: Path
    metrics_file: Path | None = None
    plots_dir: Path | None = None


def corpus_batches(
    objective: Objective, data_dir: Path, cfg: TrainConfig, rank: int = 0, world_size: int = 1
) -> tuple[BatchFn, list[dict[str, Any]]]:
    """Train batch function and fixed validation batches in the shape the objective trains on.

    A step's global batch is batch_size · grad_accum_steps · world_size rows drawn at once from (seed, step);
    rank r's micro-step m gets shard m·world_size + r. Any split of the same global batch over ranks and
    micro-steps therefore trains on the same rows. Validation holds eval_batches global batches, in batches of
    batch_size rows (the same list on every rank; the trainer shares them out), so it does not depend on the split.
    """
    train, val = MemmapCorpus(data_dir, "train"), MemmapCorpus(data_dir, "val")
    length = cfg.seq_len + objective.extra_tokens
    documents = objective.batch_kind == "documents"
    sampler_cls = DocumentSampler if documents else WindowSampler
    shards = cfg.grad_accum_steps * world_size
    samplers = [sampler_cls(train, length, cfg.batch_size, cfg.seed, m * world_size + rank, shards)
                for m in range(cfg.grad_accum_steps)]
    val_fn = eval_documents if documents else eval_windows
    val_rows = val_fn(val, length, cfg.batch_size, cfg.eval_batches * shards)
    return (lambda step, micro: {"tokens": samplers[micro].batch(step, 0)}), [{"tokens": t} for t in val_rows]


def make_tracker(
    cfg: TrainConfig, run_name: str, outputs: Outputs, facts: dict[str, Any], resume_step: int | None,
    run_id: str | None, rank: int = 0,
) -> Tracker:
    """Console + history + (DVC metrics file, DVCLive) + W&B on rank 0; the null tracker elsewhere."""
    if rank != 0:
        return Tracker()
    trackers: list[Tracker] = [ConsoleTracker(), JsonlTracker(outputs.checkpoint_dir / "history.jsonl", resume_step)]
    if outputs.metrics_file:
        trackers.append(MetricsFileTracker(outputs.metrics_file, facts))
    if outputs.plots_dir:
        trackers.append(DVCLiveTracker(outputs.plots_dir, resume_step))
    if cfg.wandb:
        trackers.append(WandbTracker(cfg.wandb_project, run_name, {**facts, "train": dataclasses.asdict(cfg)}, run_id))
    return MultiTracker(trackers)


def pretrain(
    objective: Objective, model_cfg: ModelConfig, cfg: TrainConfig, data_dir: Path, outputs: Outputs,
    run_name: str, resume_from: str | None = None,
) -> dict[str, float]:
    """Train `objective` on the prepared corpus in data_dir; resumable; returns the final metrics.

    `model_cfg` is the size preset; the run's final config adds the corpus' vocabulary and the objective's shape.

    Under torchrun this joins the job: data sharded over ranks, tracking and checkpoints on rank 0."""
    job = distributed.init_distributed(cfg.device)
    meta = load_meta(data_dir)
    tok = load_tokenizer(Path(data_dir) / meta.get("tokenizer", "tokenizer.json"))
    model_cfg = objective.model_config(model_cfg, meta["vocab_size"], cfg.seq_len, cfg.gradient_checkpointing)
    train_fn, val_batches = corpus_batches(objective, data_dir, cfg, job.rank, job.world_size)
    info = RunInfo(objective.name, meta["tokenizer_identity"], str(data_dir))
    resume_ckpt = load_checkpoint(resume_from) if resume_from else None
    if resume_ckpt is not None:  # refused before any output is touched
        check_resume(resume_ckpt, info, model_cfg, str(resume_from))
    floor = meta.get("entropy", {}).get("val", {}).get("nats_per_token")
    facts = {"architecture": objective.name, "metric_kind": objective.metric_kind, "run_name": run_name,
             **({"entropy_floor_nats_per_token": floor} if floor else {})}
    tracker = make_tracker(cfg, run_name, outputs, facts,
                           resume_ckpt["global_step"] if resume_ckpt else None,
                           resume_ckpt.get("tracker_run_id") if resume_ckpt else None, rank=job.rank)
    del resume_ckpt  # Trainer.resume reads it again, onto the right device
    trainer = Trainer(objective, model_cfg, cfg, train_fn, val_batches, outputs.checkpoint_dir, info, tracker,
                      decode=lambda ids: decode(tok, ids), dist=job)
    try:
        if resume_from:
            trainer.resume(resume_from)
            if job.is_main:
                print(f"resumed from {resume_from} at step {trainer.step}")
        if job.is_main:
            n = trainer.model.num_params()
            where = f"{job.world_size} × {trainer.device.type} ({cfg.parallel})" if job.enabled else trainer.device
            print(f"{run_name}: {objective.name} model with {n / 1e6:.2f}M parameters on {where}, "
                  f"{cfg.max_steps} steps of {trainer.tokens_per_step} tokens")
        return trainer.fit()
    finally:
        tracker.close()
