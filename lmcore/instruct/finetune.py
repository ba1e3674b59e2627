"""Wiring for a fine-tuning run: pretrained checkpoint + prepared instruction data → the one Trainer.

The architecture, model shape and objective settings come from the pretrained checkpoint; the weights start
from it (`init_state_dict`); the loss is on response tokens only (the batches carry `loss_mask`, which every
objective honours). Checkpoints keep `architecture` and record `parent_checkpoint`; `--resume_from` continues
a fine-tuning run exactly as in pretraining (optimizer, RNG, step, W&B run id).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from lmcore.config import TrainConfig
from lmcore.data.integrity import check_ids_fit, scan_tokens
from lmcore.data.memmap import DTYPES
from lmcore.errors import DataError
from lmcore.instruct.batches import instruct_batches, row_length
from lmcore.instruct.dataset import load_config
from lmcore.objectives import Objective
from lmcore.tokenizer import decode, load_tokenizer
from lmcore.train import distributed
from lmcore.train.checkpoint import (
    RunInfo, check_tokenizer, load_checkpoint, model_config_from, objective_from, parent_record, resolve_architecture,
)
from lmcore.train.rundir import check_output_paths
from lmcore.train.run import Outputs, check_resume_point, start_run
from lmcore.train.trainer import Trainer
from lmcore.train.tracking import Tracker


def pretrained_objective(ckpt: dict[str, Any], arch: str, where: str) -> Objective:
    """The objective with the settings the model was pretrained with.

    A k curriculum (SDD) is not restarted from its first stage: fine-tuning keeps the k the model ended with."""
    objective = objective_from(ckpt, arch, where)
    objective.hold_schedules()
    return objective


def check_instruct_ids(data_dir: str | Path, data: dict[str, Any], vocab_size: int) -> None:
    """Every stored row's ids must fit the model (instruction data is small: read once, in chunks)."""
    for split in data["splits"].values():
        path = Path(data_dir) / split["tokens"]
        top, _ = scan_tokens(path, DTYPES[data["dtype"]], int(split["examples"]) * int(data["max_seq_len"]))
        check_ids_fit(path, top, vocab_size, "the pretrained model's vocabulary")


def instruct_identity(data: dict[str, Any]) -> dict[str, Any]:
    """What identifies prepared instruction data (its source, seed, row width and split sizes)."""
    return {"source": data.get("source"), "seed": data.get("seed"), "max_seq_len": data.get("max_seq_len"),
            **{name: {"examples": split["examples"]} for name, split in data["splits"].items()}}


def finetune(pretrained: str | Path, data_dir: str | Path, cfg: TrainConfig,
             outputs: Outputs | Callable[[str], Outputs], run_name: str | None = None, architecture: str | None = None,
             resume_from: str | Path | None = None, allow_changed_settings: bool = False) -> dict[str, float]:
    """Fine-tune the pretrained checkpoint on data_dir's train split; resumable; returns the final metrics.

    `outputs` may be a function of the architecture (which only the checkpoint tells). Everything is checked
    before any output is touched (see lmcore/train/run.py)."""
    job = distributed.init_distributed(cfg.device)
    where = str(pretrained)
    ckpt = load_checkpoint(pretrained)
    arch, _ = resolve_architecture(ckpt, architecture, where)
    data = load_config(data_dir)
    check_tokenizer(ckpt, data["tokenizer_identity"], f"{where} with {data_dir}")
    objective = pretrained_objective(ckpt, arch, where)
    outputs = outputs(arch) if callable(outputs) else outputs
    check_output_paths(outputs.checkpoint_dir, outputs.metrics_file, outputs.plots_dir)
    model_cfg = model_config_from(ckpt, where, gradient_checkpointing=cfg.gradient_checkpointing)
    cfg = dataclasses.replace(cfg, seq_len=int(data["max_seq_len"]))  # rows are the data's width
    if row_length(cfg.seq_len, objective) > model_cfg.max_seq_len:
        raise DataError(f"{data_dir}: rows of {cfg.seq_len} tokens exceed the model's max_seq_len "
                        f"{model_cfg.max_seq_len}; prepare with a smaller --max_seq_len")
    if data["vocab_size"] > model_cfg.vocab_size:
        raise DataError(f"{data_dir}: vocabulary {data['vocab_size']} exceeds the model's {model_cfg.vocab_size}")
    check_instruct_ids(data_dir, data, model_cfg.vocab_size)
    train_fn, val_batches = instruct_batches(objective, data_dir, cfg, job.rank, job.world_size)
    info = RunInfo(arch, data["tokenizer_identity"], str(data_dir), kind="finetune", parent=parent_record(where, ckpt),
                   extra={"instruct_data": {k: data.get(k) for k in ("source", "max_seq_len", "counts", "seed")}},
                   data_identity=instruct_identity(data))
    resume = (check_resume_point(resume_from, info, model_cfg, cfg, objective, outputs, allow_changed_settings)
              if resume_from else None)
    run_name = run_name or cfg.wandb_run_name or f"{arch}-instruct-{Path(data_dir).name}-v{cfg.version}"
    facts = {"architecture": arch, "metric_kind": objective.metric_kind, "run_name": run_name,
             "parent_checkpoint": where, "loss_on": "response tokens (and <eos>) only"}
    tok = load_tokenizer(Path(data_dir) / data.get("tokenizer", "tokenizer.json"))
    trainer = Trainer(objective, model_cfg, cfg, train_fn, val_batches, outputs.checkpoint_dir, info, Tracker(),
                      decode=lambda ids: decode(tok, ids), init_state_dict=ckpt["model_state_dict"], dist=job)
    del ckpt
    if resume is not None:
        trainer.resume(resume.path)
    banner = (f"{run_name}: fine-tuning {arch} ({trainer.model.num_params() / 1e6:.2f}M parameters) from "
              f"{where} on {data_dir}, {cfg.max_steps} steps, loss on response tokens only")
    return start_run(trainer, cfg, outputs, run_name, facts, resume, banner)
