"""Validation loss, perplexity and accuracy exactly as training logs them, with what kind of number each is.

The same fixed validation batches (the checkpoint's seq_len, batch_size, eval_batches), the same noise
generators and each objective's own `eval_stats` + the trainer's `stats_to_metrics`: a best.pt evaluated here
reproduces its `best_val_loss`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmcore.config import TrainConfig, apply_overrides, build_dataclass
from lmcore.eval.kinds import val_kinds
from lmcore.train.checkpoint import LoadedModel
from lmcore.train.run import corpus_batches
from lmcore.train.trainer import stats_to_metrics, validation_totals


def eval_train_config(loaded: LoadedModel, eval_batches: int = 0) -> TrainConfig:
    """The checkpoint's train config (seq_len, batch_size, seed, eval_batches), eval_batches overridable."""
    where = f"{loaded.path}: train_config"
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    recorded = build_dataclass(
        TrainConfig, {k: v for k, v in (loaded.info.get("train_config") or {}).items() if k in known}, where
    )
    return apply_overrides(recorded, {"eval_batches": eval_batches or None, "device": str(loaded.device)}, where)


def validation_metrics(loaded: LoadedModel, data_dir: str | Path, eval_batches: int = 0) -> dict[str, Any]:
    """{"metrics": {loss, perplexity, accuracy, ...}, "kind": {...}, "info": {...}} on the validation split."""
    cfg = eval_train_config(loaded, eval_batches)
    objective = loaded.objective
    _, batches = corpus_batches(objective, Path(data_dir), cfg)
    totals = validation_totals(objective, loaded.model, batches, cfg.seed, loaded.device, loaded.amp_dtype)
    metrics = {k.split("/", 1)[1]: v for k, v in stats_to_metrics(totals, "val").items()}
    kind = val_kinds(objective.metric_kind, list(metrics))
    info: dict[str, Any] = {
        "batches": len(batches),
        # Validation documents, each from its start (the same ones for every architecture; AR's packed windows,
        # behind val/window_loss, are not counted here).
        "rows": sum(len(b["tokens"]) for b in batches if "packed" not in b),
        "seq_len": cfg.seq_len,
        "scored": int(totals.get("count", 0)),
        "metric_kind": objective.metric_kind,
    }
    t_samples = getattr(objective.cfg, "eval_t_samples", None)  # Monte-Carlo t draws per row, where the loss has t
    if t_samples is not None:
        info["t_samples_per_row"] = t_samples
    if hasattr(objective, "k"):  # candidates per position the loss was measured with (SDD's curriculum)
        info["k"] = objective.k
    return {"metrics": metrics, "kind": kind, "info": info}
