"""The launch of a run: pretraining (prepared corpus + objective) and fine-tuning (pretrained checkpoint +
instruction data) are each planned and validated, then started by the one `launch`. Stage scripts call
`pretrain` and `finetune`.

Validate, then touch: every input, setting and the resumed checkpoint's compatibility are checked and the
Trainer is built (device, model, resumed state) before anything is written; only then does a run take its
checkpoint folder's lock and create the trackers (`start_run`). A refused run leaves every earlier file as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmcore.config import TrainConfig
from lmcore.data import (
    DocumentSampler,
    MemmapCorpus,
    WindowSampler,
    eval_documents,
    eval_windows,
    load_meta,
    micro_samplers,
)
from lmcore.data.instruct_batches import instruct_batches, row_length
from lmcore.data.instruct_dataset import load_config
from lmcore.data.integrity import check_corpus_ids, check_instruct_ids, corpus_identity, instruct_identity
from lmcore.errors import DataError, RunFolderBusyError
from lmcore.models import ModelConfig
from lmcore.objectives import Batch, Objective
from lmcore.tokenizer import decode, load_tokenizer
from lmcore.train import distributed
from lmcore.train.budget import budgeted
from lmcore.train.checkpoint import (
    RunInfo,
    changes_record,
    check_resume,
    check_tokenizer,
    load_checkpoint,
    model_config_from,
    objective_from,
    parent_record,
    resolve_architecture,
)
from lmcore.train.experiment import Experiment, checkpoint_experiment, new_experiment, preset_name, run_config
from lmcore.train.rundir import RunLock, check_output_paths, remove_stale_temp
from lmcore.train.tracking import (
    ConsoleTracker,
    DVCLiveTracker,
    JsonlTracker,
    MetricsFileTracker,
    MultiTracker,
    Tracker,
    WandbTracker,
    read_history,
)
from lmcore.train.trainer import BatchFn, Trainer


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
    shards = cfg.grad_accum_steps * world_size

    def sampler(shard: int, n: int) -> DocumentSampler | WindowSampler:
        if documents:  # rows of seq_len tokens; an AR row is opened by the <eos> before its document (extra_tokens)
            return DocumentSampler(train, cfg.seq_len, cfg.batch_size, cfg.seed, shard, n, objective.extra_tokens)
        return WindowSampler(train, length, cfg.batch_size, cfg.seed, shard, n)

    samplers = micro_samplers(
        sampler,
        cfg.grad_accum_steps,
        rank,
        world_size,
    )
    # Every objective is validated on the same documents, each from its start: val/loss is then per document
    # token for every architecture, the unit of the corpus entropy floor. AR reads the <eos> that opens a document
    # first (extra_tokens); trained on windows (ar.rows), it is also scored on the packed windows it trains on
    # (batches marked `packed`: val/window_loss), which start mid-document.
    n_val = cfg.eval_batches * shards
    val_rows = eval_documents(val, cfg.seq_len, cfg.batch_size, n_val, opener=objective.extra_tokens)
    val_batches: list[dict[str, Any]] = [{"tokens": t} for t in val_rows]
    if not documents:
        packed = torch.ones((), dtype=torch.bool)
        val_batches += [{"tokens": t, "packed": packed} for t in eval_windows(val, length, cfg.batch_size, n_val)]
    return (lambda step, micro: {"tokens": samplers[micro].batch(step, 0)}), val_batches


def make_tracker(
    cfg: TrainConfig,
    run_name: str,
    outputs: Outputs,
    facts: dict[str, Any],
    resume_step: int | None,
    run_id: str | None,
    rank: int = 0,
    wandb_run: WandbRun | None = None,
) -> Tracker:
    """Console progress + history + (DVC metrics file, DVCLive) + W&B on rank 0; the null tracker elsewhere.

    `wandb_run` says what the W&B run records besides the metrics (default: the facts and the settings only)."""
    if rank != 0:
        return Tracker()
    trackers: list[Tracker] = [
        ConsoleTracker(cfg.stop_at_step or cfg.max_steps, resume_step or 0, run_name),
        JsonlTracker(outputs.checkpoint_dir / "history.jsonl", resume_step),
    ]
    if outputs.metrics_file:
        trackers.append(MetricsFileTracker(outputs.metrics_file, facts, resume=resume_step is not None))
    if outputs.plots_dir:
        trackers.append(DVCLiveTracker(outputs.plots_dir, resume_step))
    if cfg.wandb:
        setup = wandb_run or WandbRun()
        trackers.append(
            WandbTracker(
                cfg.wandb_project,
                run_name,
                {**facts, **setup.config, "train": dataclasses.asdict(cfg)},
                run_id,
                init_timeout=cfg.wandb_init_timeout,
                group=setup.group,
                job_type=setup.job_type,
                step_axis=True,
                checkpoint_dir=outputs.checkpoint_dir if cfg.wandb_log_checkpoints else None,
            )
        )
    return MultiTracker(trackers)


@dataclass
class WandbRun:
    """What a training run's W&B run records besides its metrics: the config (lmcore/train/experiment.py
    run_config), the experiment's group and the job type."""

    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    group: str | None = None
    job_type: str | None = None


def budget_note(cfg: TrainConfig) -> str:
    """How the step count was chosen, for the start-up line (a budget sets it, not max_steps)."""
    if cfg.flops_budget:
        return f" (the train.flops_budget of {cfg.flops_budget:.4g} FLOPs)"
    if cfg.tokens_budget:
        return f" (the train.tokens_budget of {cfg.tokens_budget:.4g} tokens)"
    return ""


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
    experiment: Experiment  # the W&B group and the run name's parts (lmcore/train/experiment.py)
    init_state_dict: dict[str, Any] | None = None  # fine-tuning starts from these weights


def pretrain(
    objective: Objective,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    data_dir: Path,
    outputs: Outputs,
    run_name: str,
    resume_from: str | None = None,
    allow_changed_settings: bool = False,
    experiment: Experiment | None = None,
) -> dict[str, float]:
    """Train `objective` on the prepared corpus in data_dir; resumable; returns the final metrics.

    `model_cfg` is the size preset; the run's final config adds the corpus' vocabulary and the objective's shape.
    `experiment` (W&B group, run name parts) defaults to the data folder's name, the preset's and train.version.
    A resume must keep the settings that change the computation unless `allow_changed_settings`.
    Under torchrun this joins the job: data sharded over ranks, tracking and checkpoints on rank 0."""
    job = distributed.init_distributed(cfg.device)
    check_output_paths(outputs.checkpoint_dir, outputs.metrics_file, outputs.plots_dir)
    experiment = experiment or new_experiment(Path(data_dir).name, preset_name(model_cfg.to_dict()), cfg.version)
    meta = load_meta(data_dir)
    tok = load_tokenizer(Path(data_dir) / meta.get("tokenizer", "tokenizer.json"))
    model_cfg = objective.model_config(model_cfg, meta["vocab_size"], cfg.seq_len, cfg.gradient_checkpointing)
    check_corpus_ids(data_dir, meta, model_cfg.vocab_size)
    cfg = budgeted(cfg, model_cfg, objective, job.world_size)
    floor = meta.get("entropy", {}).get("val", {}).get("nats_per_token")
    plan = RunPlan(
        objective,
        model_cfg,
        cfg,
        corpus_batches(objective, data_dir, cfg, job.rank, job.world_size),
        RunInfo(
            objective.name,
            meta["tokenizer_identity"],
            str(data_dir),
            extra={"experiment": experiment.to_dict()},
            data_identity=corpus_identity(meta),
        ),
        run_name,
        {
            "architecture": objective.name,
            "metric_kind": objective.metric_kind,
            "run_name": run_name,
            **({"entropy_floor_nats_per_token": floor} if floor else {}),
        },
        tok,
        f"{objective.name} model, {cfg.max_steps} steps{budget_note(cfg)}",
        experiment,
    )
    return launch(plan, outputs, resume_from, job, allow_changed_settings)


def finetune(
    pretrained: str | Path,
    data_dir: str | Path,
    cfg: TrainConfig,
    outputs: Outputs | Callable[[str], Outputs],
    run_name: str | None = None,
    architecture: str | None = None,
    resume_from: str | Path | None = None,
    allow_changed_settings: bool = False,
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
    outputs = outputs(arch) if callable(outputs) else outputs
    check_output_paths(outputs.checkpoint_dir, outputs.metrics_file, outputs.plots_dir)
    model_cfg = model_config_from(ckpt, where, gradient_checkpointing=cfg.gradient_checkpointing)
    cfg = dataclasses.replace(cfg, seq_len=int(data["max_seq_len"]))  # rows are the data's width
    if row_length(cfg.seq_len, objective) > model_cfg.max_seq_len:
        raise DataError(
            f"{data_dir}: rows of {cfg.seq_len} tokens exceed the model's max_seq_len "
            f"{model_cfg.max_seq_len}; prepare with a smaller --max_seq_len"
        )
    if data["vocab_size"] > model_cfg.vocab_size:
        raise DataError(f"{data_dir}: vocabulary {data['vocab_size']} exceeds the model's {model_cfg.vocab_size}")
    check_instruct_ids(data_dir, data, model_cfg.vocab_size)
    cfg = budgeted(cfg, model_cfg, objective, job.world_size)
    experiment = checkpoint_experiment(ckpt)  # a fine-tune joins its pretraining run's experiment
    run_name = run_name or cfg.wandb_run_name or experiment.run_name(arch, "-instruct")
    plan = RunPlan(
        objective,
        model_cfg,
        cfg,
        instruct_batches(objective, data_dir, cfg, job.rank, job.world_size),
        RunInfo(
            arch,
            data["tokenizer_identity"],
            str(data_dir),
            kind="finetune",
            parent=parent_record(where, ckpt),
            extra={
                "instruct_data": {k: data.get(k) for k in ("source", "max_seq_len", "counts", "seed")},
                "experiment": experiment.to_dict(),
            },
            data_identity=instruct_identity(data),
        ),
        run_name,
        {
            "architecture": arch,
            "metric_kind": objective.metric_kind,
            "run_name": run_name,
            "parent_checkpoint": where,
            "loss_on": "response tokens (and <eos>) only",
        },
        load_tokenizer(Path(data_dir) / data.get("tokenizer", "tokenizer.json")),
        f"fine-tuning {arch} from {where} on {data_dir}, {cfg.max_steps} steps{budget_note(cfg)}, loss on response "
        "tokens only",
        experiment,
        init_state_dict=ckpt["model_state_dict"],
    )
    del ckpt
    return launch(plan, outputs, resume_from, job, allow_changed_settings)


@dataclass
class ResumePoint:
    """The checked checkpoint a run continues from: what the trackers need (Trainer.resume restores the rest)."""

    path: str
    step: int
    tracker_run_id: str | None


def check_resume_point(
    resume_from: str | Path, plan: RunPlan, outputs: Outputs, allow_changed_settings: bool
) -> ResumePoint:
    """Load and check the checkpoint to resume (and the history it continues) before any output is touched.

    Settings changed on purpose (allow_changed_settings) are added to `plan.info.changed_settings`, hence recorded
    in every checkpoint the run writes."""
    ckpt = load_checkpoint(resume_from)
    changes = check_resume(
        ckpt,
        plan.info,
        plan.model_cfg,
        str(resume_from),
        dataclasses.asdict(plan.cfg),
        dataclasses.asdict(plan.objective.cfg),
        allow_changed_settings,
    )
    if changes and distributed.current().is_main:
        print(
            f"{resume_from}: resuming with changed settings, as allowed: "
            f"{', '.join(f'{k} {a} → {b}' for k, (a, b) in changes.items())}"
        )
    plan.info.changed_settings = changes_record(ckpt, changes)
    if "experiment" in ckpt:  # a resumed run stays in the experiment (W&B group) it started in
        plan.experiment = checkpoint_experiment(ckpt)
        plan.info.extra["experiment"] = plan.experiment.to_dict()
    read_history(outputs.checkpoint_dir / "history.jsonl")  # a damaged history is refused here, not mid-run
    return ResumePoint(str(resume_from), ckpt["global_step"], ckpt.get("tracker_run_id"))


def launch(
    plan: RunPlan,
    outputs: Outputs,
    resume_from: str | Path | None,
    job: distributed.DistInfo,
    allow_changed_settings: bool = False,
) -> dict[str, float]:
    """The one launch of pretraining and fine-tuning: check the resume point, build the trainer (device, model,
    resumed state) with no tracker yet, then `start_run`. Nothing is written before the last check passes."""
    resume = check_resume_point(resume_from, plan, outputs, allow_changed_settings) if resume_from else None
    tok = plan.tokenizer
    trainer = Trainer(
        plan.objective,
        plan.model_cfg,
        plan.cfg,
        *plan.batches,
        outputs.checkpoint_dir,
        plan.info,
        Tracker(),
        decode=lambda ids: decode(tok, ids),
        init_state_dict=plan.init_state_dict,
        dist=job,
    )
    if resume is not None:
        trainer.resume(resume.path)
    n = trainer.model.num_params()
    where = f"{job.world_size} × {trainer.device.type} ({plan.cfg.parallel})" if job.enabled else trainer.device
    banner = (
        f"{plan.run_name}: {plan.banner}; {n / 1e6:.2f}M parameters on {where}, "
        f"{trainer.tokens_per_step} tokens per step"
    )
    wandb_run = (
        WandbRun(
            run_config(
                plan.experiment,
                plan.model_cfg,
                n,
                dataclasses.asdict(plan.objective.cfg),
                plan.info.data_identity,
                **({"parent": plan.info.parent} if plan.info.parent else {}),
            ),
            plan.experiment.group,
            plan.info.kind,  # pretrain | finetune
        )
        if plan.cfg.wandb and job.is_main
        else None
    )
    return start_run(trainer, plan.cfg, outputs, plan.run_name, plan.facts, resume, banner, wandb_run)


def start_run(
    trainer: Trainer,
    cfg: TrainConfig,
    outputs: Outputs,
    run_name: str,
    facts: dict[str, Any],
    resume: ResumePoint | None,
    banner: str,
    wandb_run: WandbRun | None = None,
) -> dict[str, float]:
    """Run a built and checked trainer: take the checkpoint folder's lock (rank 0), remove leftovers of killed
    writers, create the trackers, fit. A resumed run with no steps left touches nothing. Returns the final metrics."""
    job = trainer.dist
    end = cfg.stop_at_step or cfg.max_steps
    if resume is not None and trainer.step >= end:
        if job.is_main:
            print(
                f"{resume.path}: already at step {trainer.step} (this run ends at {end}); nothing to do, "
                f"outputs left as they are"
            )
        return {}
    lock = RunLock(outputs.checkpoint_dir)
    refusal: RunFolderBusyError | None = None
    if job.is_main:  # one writer per folder; other ranks never write there
        try:
            lock.acquire()
        except RunFolderBusyError as e:
            refusal = e
    if distributed.any_rank(refusal is not None, trainer.device):
        raise refusal or RunFolderBusyError(
            f"{outputs.checkpoint_dir}: another run is writing into this folder (refused on rank 0)"
        )
    try:
        if job.is_main:
            remove_stale_temp(outputs.checkpoint_dir)
            if outputs.metrics_file:  # a shared folder (metrics/): only this file's leftovers
                remove_stale_temp(outputs.metrics_file.parent, outputs.metrics_file.name)
        if job.is_main:  # before the trackers: the console's progress bar starts with them
            if resume is not None:
                print(f"resumed from {resume.path} at step {trainer.step}")
            print(banner, flush=True)
        tracker = make_tracker(
            cfg,
            run_name,
            outputs,
            facts,
            resume.step if resume else None,
            resume.tracker_run_id if resume else None,
            rank=job.rank,
            wandb_run=wandb_run,
        )
        trainer.tracker = tracker
        try:
            return trainer.fit()
        finally:
            tracker.close()
    finally:
        lock.release()
