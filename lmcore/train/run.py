"""Wiring for a pretraining run: prepared corpus + objective + trackers → Trainer. Stage scripts call this.

Validate, then touch: every input, setting and the resumed checkpoint's compatibility are checked and the
Trainer is built (device, model, resumed state) before anything is written; only then does a run take its
checkpoint folder's lock and create the trackers (start_run). A refused run leaves every earlier file as it was.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcore.config import TrainConfig
from lmcore.data import DocumentSampler, MemmapCorpus, WindowSampler, eval_documents, eval_windows, load_meta
from lmcore.data.integrity import check_corpus_ids, corpus_identity
from lmcore.errors import RunFolderBusyError
from lmcore.models import ModelConfig
from lmcore.objectives import Objective
from lmcore.tokenizer import decode, load_tokenizer
from lmcore.train import distributed
from lmcore.train.checkpoint import RunInfo, changes_record, check_resume, load_checkpoint
from lmcore.train.rundir import RunLock, check_output_paths, remove_stale_temp
from lmcore.train.trainer import BatchFn, Trainer
from lmcore.train.tracking import (
    ConsoleTracker, DVCLiveTracker, JsonlTracker, MetricsFileTracker, MultiTracker, Tracker, WandbTracker,
    read_history,
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
        trackers.append(MetricsFileTracker(outputs.metrics_file, facts, resume=resume_step is not None))
    if outputs.plots_dir:
        trackers.append(DVCLiveTracker(outputs.plots_dir, resume_step))
    if cfg.wandb:
        trackers.append(WandbTracker(cfg.wandb_project, run_name, {**facts, "train": dataclasses.asdict(cfg)}, run_id,
                                     init_timeout=cfg.wandb_init_timeout))
    return MultiTracker(trackers)


@dataclass
class ResumePoint:
    """The checked checkpoint a run continues from: what the trackers need (Trainer.resume restores the rest)."""

    path: str
    step: int
    tracker_run_id: str | None


def check_resume_point(resume_from: str | Path, info: RunInfo, model_cfg: ModelConfig, cfg: TrainConfig,
                       objective: Objective, outputs: Outputs, allow_changed_settings: bool) -> ResumePoint:
    """Load and check the checkpoint to resume (and the history it continues) before any output is touched.

    Settings changed on purpose (allow_changed_settings) are added to `info.changed_settings`, hence recorded
    in every checkpoint the run writes."""
    ckpt = load_checkpoint(resume_from)
    changes = check_resume(ckpt, info, model_cfg, str(resume_from), dataclasses.asdict(cfg),
                           dataclasses.asdict(objective.cfg), allow_changed_settings)
    if changes and distributed.current().is_main:
        print(f"{resume_from}: resuming with changed settings, as allowed: "
              f"{', '.join(f'{k} {a} → {b}' for k, (a, b) in changes.items())}")
    info.changed_settings = changes_record(ckpt, changes)
    read_history(outputs.checkpoint_dir / "history.jsonl")  # a damaged history is refused here, not mid-run
    return ResumePoint(str(resume_from), ckpt["global_step"], ckpt.get("tracker_run_id"))


def start_run(trainer: Trainer, cfg: TrainConfig, outputs: Outputs, run_name: str, facts: dict[str, Any],
              resume: ResumePoint | None, banner: str) -> dict[str, float]:
    """Run a built and checked trainer: take the checkpoint folder's lock (rank 0), remove leftovers of killed
    writers, create the trackers, fit. A resumed run with no steps left touches nothing. Returns the final metrics."""
    job = trainer.dist
    end = cfg.stop_at_step or cfg.max_steps
    if resume is not None and trainer.step >= end:
        if job.is_main:
            print(f"{resume.path}: already at step {trainer.step} (this run ends at {end}); nothing to do, "
                  f"outputs left as they are")
        return {}
    lock = RunLock(outputs.checkpoint_dir)
    refusal: RunFolderBusyError | None = None
    if job.is_main:  # one writer per folder; other ranks never write there
        try:
            lock.acquire()
        except RunFolderBusyError as e:
            refusal = e
    if distributed.any_rank(refusal is not None, trainer.device):
        raise refusal or RunFolderBusyError(f"{outputs.checkpoint_dir}: another run is writing into this folder "
                                            f"(refused on rank 0)")
    try:
        if job.is_main:
            remove_stale_temp(outputs.checkpoint_dir)
            if outputs.metrics_file:  # a shared folder (metrics/): only this file's leftovers
                remove_stale_temp(outputs.metrics_file.parent, outputs.metrics_file.name)
        tracker = make_tracker(cfg, run_name, outputs, facts, resume.step if resume else None,
                               resume.tracker_run_id if resume else None, rank=job.rank)
        trainer.tracker = tracker
        try:
            if job.is_main:
                if resume is not None:
                    print(f"resumed from {resume.path} at step {trainer.step}")
                print(banner)
            return trainer.fit()
        finally:
            tracker.close()
    finally:
        lock.release()


def pretrain(
    objective: Objective, model_cfg: ModelConfig, cfg: TrainConfig, data_dir: Path, outputs: Outputs,
    run_name: str, resume_from: str | None = None, allow_changed_settings: bool = False,
) -> dict[str, float]:
    """Train `objective` on the prepared corpus in data_dir; resumable; returns the final metrics.

    `model_cfg` is the size preset; the run's final config adds the corpus' vocabulary and the objective's shape.
    A resume must keep the settings that change the computation unless `allow_changed_settings`.

    Under torchrun this joins the job: data sharded over ranks, tracking and checkpoints on rank 0."""
    job = distributed.init_distributed(cfg.device)
    check_output_paths(outputs.checkpoint_dir, outputs.metrics_file, outputs.plots_dir)
    meta = load_meta(data_dir)
    tok = load_tokenizer(Path(data_dir) / meta.get("tokenizer", "tokenizer.json"))
    model_cfg = objective.model_config(model_cfg, meta["vocab_size"], cfg.seq_len, cfg.gradient_checkpointing)
    check_corpus_ids(data_dir, meta, model_cfg.vocab_size)
    train_fn, val_batches = corpus_batches(objective, data_dir, cfg, job.rank, job.world_size)
    info = RunInfo(objective.name, meta["tokenizer_identity"], str(data_dir), data_identity=corpus_identity(meta))
    resume = (check_resume_point(resume_from, info, model_cfg, cfg, objective, outputs, allow_changed_settings)
              if resume_from else None)
    floor = meta.get("entropy", {}).get("val", {}).get("nats_per_token")
    facts = {"architecture": objective.name, "metric_kind": objective.metric_kind, "run_name": run_name,
             **({"entropy_floor_nats_per_token": floor} if floor else {})}
    trainer = Trainer(objective, model_cfg, cfg, train_fn, val_batches, outputs.checkpoint_dir, info, Tracker(),
                      decode=lambda ids: decode(tok, ids), dist=job)
    if resume is not None:
        trainer.resume(resume.path)
    n = trainer.model.num_params()
    where = f"{job.world_size} × {trainer.device.type} ({cfg.parallel})" if job.enabled else trainer.device
    banner = (f"{run_name}: {objective.name} model with {n / 1e6:.2f}M parameters on {where}, "
              f"{cfg.max_steps} steps of {trainer.tokens_per_step} tokens")
    return start_run(trainer, cfg, outputs, run_name, facts, resume, banner)
