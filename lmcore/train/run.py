"""The launch of a run: pretraining (prepared corpus + objective) and fine-tuning (pretrained checkpoint +
instruction data) are each planned and validated, then started by the one `launch` (trackers → Trainer → fit).
Stage scripts call `pretrain` and `finetune`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmcore.config import TrainConfig
from lmcore.data import (
    DocumentSampler, MemmapCorpus, WindowSampler, eval_documents, eval_windows, load_meta, micro_samplers,
)
from lmcore.data.instruct_batches import instruct_batches, row_length
from lmcore.data.instruct_dataset import load_config
from lmcore.errors import DataError
from lmcore.models import ModelConfig
from lmcore.objectives import Batch, Objective
from lmcore.tokenizer import decode, load_tokenizer
from lmcore.train import distributed
from lmcore.train.checkpoint import (
    RunInfo, check_resume, check_tokenizer, load_checkpoint, model_config_from, objective_from, parent_record,
    resolve_architecture,
)
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
    samplers = micro_samplers(lambda shard, n: sampler_cls(train, length, cfg.batch_size, cfg.seed, shard, n),
                              cfg.grad_accum_steps, rank, world_size)
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


@dataclass
class RunPlan:
    """A run, fully validated and wired, before any output is touched: what `launch` starts."""

    objective: Objective
    model_cfg: ModelConfig  # final (frozen)
    cfg: TrainConfig
    batches: tuple[BatchFn, list[Batch]]  # train batch function, fixed validation batches
    info: RunInfo
    run_name: str
    facts: dict[str, Any]  # run facts for the metrics file and W&B
    tokenizer: Any  # tokenizers.Tokenizer, to decode samples
    banner: str  # the line printed when training starts
    init_state_dict: dict[str, Any] | None = None  # fine-tuning starts from these weights


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
    floor = meta.get("entropy", {}).get("val", {}).get("nats_per_token")
    plan = RunPlan(
        objective, model_cfg, cfg, corpus_batches(objective, data_dir, cfg, job.rank, job.world_size),
        RunInfo(objective.name, meta["tokenizer_identity"], str(data_dir)), run_name,
        {"architecture": objective.name, "metric_kind": objective.metric_kind, "run_name": run_name,
         **({"entropy_floor_nats_per_token": floor} if floor else {})},
        tok, f"{objective.name} model, {cfg.max_steps} steps")
    return launch(plan, outputs, resume_from, job)


def finetune(pretrained: str | Path, data_dir: str | Path, cfg: TrainConfig, outputs: Outputs | Callable[[str], Outputs],
             run_name: str | None = None, architecture: str | None = None, resume_from: str | Path | None = None
             ) -> dict[str, float]:
    """Fine-tune a pretrained checkpoint of any architecture on prepared instruction data; resumable.

    The architecture, model shape and objective settings come from the checkpoint and the weights start from it;
    the loss is on response tokens only (the batches carry `loss_mask`, which every objective honours). A k
    curriculum (SDD) is not restarted: fine-tuning keeps the k the model ended with. `outputs` may be a function
    of the architecture (which only the checkpoint tells). Returns the final metrics."""
    job = distributed.init_distributed(cfg.device)
    where = str(pretrained)
    ckpt = load_checkpoint(pretrained)
    arch, _ = resolve_architecture(ckpt, architecture, where)
    data = load_config(data_dir)
    check_tokenizer(ckpt, data["tokenizer_identity"], f"{where} with {data_dir}")
    objective = objective_from(ckpt, arch, where)
    objective.hold_schedules()
    model_cfg = model_config_from(ckpt, where, gradient_checkpointing=cfg.gradient_checkpointing)
    cfg = dataclasses.replace(cfg, seq_len=int(data["max_seq_len"]))  # rows are the data's width
    if row_length(cfg.seq_len, objective) > model_cfg.max_seq_len:
        raise DataError(f"{data_dir}: rows of {cfg.seq_len} tokens exceed the model's max_seq_len "
                        f"{model_cfg.max_seq_len}; prepare with a smaller --max_seq_len")
    if data["vocab_size"] > model_cfg.vocab_size:
        raise DataError(f"{data_dir}: vocabulary {data['vocab_size']} exceeds the model's {model_cfg.vocab_size}")
    run_name = run_name or cfg.wandb_run_name or f"{arch}-instruct-{Path(data_dir).name}-v{cfg.version}"
    plan = RunPlan(
        objective, model_cfg, cfg, instruct_batches(objective, data_dir, cfg, job.rank, job.world_size),
        RunInfo(arch, data["tokenizer_identity"], str(data_dir), kind="finetune", parent=parent_record(where, ckpt),
                extra={"instruct_data": {k: data.get(k) for k in ("source", "max_seq_len", "counts", "seed")}}),
        run_name,
        {"architecture": arch, "metric_kind": objective.metric_kind, "run_name": run_name,
         "parent_checkpoint": where, "loss_on": "response tokens (and <eos>) only"},
        load_tokenizer(Path(data_dir) / data.get("tokenizer", "tokenizer.json")),
        f"fine-tuning {arch} from {where} on {data_dir}, {cfg.max_steps} steps, loss on response tokens only",
        init_state_dict=ckpt["model_state_dict"])
    del ckpt
    return launch(plan, outputs(arch) if callable(outputs) else outputs, resume_from, job)


def launch(plan: RunPlan, outputs: Outputs, resume_from: str | Path | None, job: distributed.DistInfo
           ) -> dict[str, float]:
    """Start (or resume) a planned run: trackers, the trainer, fit. The one launch of pretraining and fine-tuning."""
    resume_ckpt = load_checkpoint(resume_from) if resume_from else None
    if resume_ckpt is not None:  # refused before any output is touched
        check_resume(resume_ckpt, plan.info, plan.model_cfg, str(resume_from))
    tracker = make_tracker(plan.cfg, plan.run_name, outputs, plan.facts,
                           resume_ckpt["global_step"] if resume_ckpt else None,
                           resume_ckpt.get("tracker_run_id") if resume_ckpt else None, rank=job.rank)
    del resume_ckpt  # Trainer.resume reads it again, onto the right device
    tok = plan.tokenizer
    try:
        trainer = Trainer(plan.objective, plan.model_cfg, plan.cfg, *plan.batches, outputs.checkpoint_dir, plan.info,
                          tracker, decode=lambda ids: decode(tok, ids), init_state_dict=plan.init_state_dict,
                          dist=job)
        if resume_from:
            trainer.resume(resume_from)
            if job.is_main:
                print(f"resumed from {resume_from} at step {trainer.step}")
        if job.is_main:
            n = trainer.model.num_params()
            where = f"{job.world_size} × {trainer.device.type} ({plan.cfg.parallel})" if job.enabled else trainer.device
            print(f"{plan.run_name}: {plan.banner}; {n / 1e6:.2f}M parameters on {where}, "
                  f"{trainer.tokens_per_step} tokens per step")
        return trainer.fit()
    finally:
        tracker.close()
