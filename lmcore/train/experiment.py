"""Which experiment a run belongs to, and what a W&B run records beyond its metrics.

An experiment is one dataset × model size × version (`{dataset}-{size}-v{version}`), or the DVC experiment that
ran it (`dvc exp run` sets DVC_EXP_NAME). Its pretraining runs (one per architecture), their fine-tunes and
every evaluation share one W&B `group`, told apart by `job_type` (pretrain | finetune | eval) and by the run
name `{architecture}-{dataset}-{size}-v{version}` (+ `-instruct` for fine-tuning, + `-eval` for evaluations).
A pretraining checkpoint records its experiment (key `experiment`), and a fine-tune or an evaluation joins the
experiment of the checkpoint it starts from, so the link holds even when they run later, outside that DVC run.

Nothing here imports wandb: the tracker (lmcore/train/tracking.py) hands its run to `define_metrics`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmcore.models import PRESETS, ModelConfig

JOB_TYPES = ("pretrain", "finetune", "eval")
STEP_METRIC = "train/step"  # the x axis of every training metric (the optimizer step)
# Compute axes: W&B can draw any metric against these instead of the step (comparisons at equal compute).
COMPUTE_AXES = ("train/flops", "train/seconds", "val/flops", "val/seconds")
# Pipeline outputs that a run itself rewrites: a change there does not make the code revision dirty.
OUTPUT_PATHS = ("dvc.lock", "metrics", "plots")


@dataclass(frozen=True)
class Experiment:
    """One experiment: the dataset, the model size and the version in run names, and the W&B group."""

    dataset: str
    size: str
    version: int
    group: str

    def run_name(self, architecture: str, suffix: str = "") -> str:
        """`{architecture}-{dataset}-{size}-v{version}{suffix}`."""
        return f"{architecture}-{self.dataset}-{self.size}-v{self.version}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as checkpoints store it."""
        return asdict(self)


def new_experiment(dataset: str, size: str, version: int) -> Experiment:
    """The experiment of a new pretraining run: grouped by the DVC experiment when `dvc exp run` runs it."""
    return Experiment(dataset, size, int(version), dvc_experiment()["name"] or f"{dataset}-{size}-v{version}")


def preset_name(model_config: dict[str, Any]) -> str:
    """The size preset whose shape a model config has, else `custom`."""
    for name, shape in PRESETS.items():
        if all(model_config.get(k) == v for k, v in shape.items()):
            return name
    return "custom"


def checkpoint_experiment(ckpt: dict[str, Any]) -> Experiment:
    """The experiment a checkpoint belongs to: the one it records, else (checkpoints written before it was
    recorded) one rebuilt from its data folder, model shape and version."""
    recorded = ckpt.get("experiment")
    if isinstance(recorded, dict):
        return Experiment(**{k: recorded[k] for k in ("dataset", "size", "version", "group")})
    dataset = Path(str(ckpt.get("data_dir") or "data")).name
    version = int((ckpt.get("train_config") or {}).get("version", 1))
    return new_experiment(dataset, preset_name(ckpt.get("model_config") or {}), version)


def dvc_experiment() -> dict[str, str | None]:
    """The DVC experiment running this process (`dvc exp run` sets DVC_EXP_NAME and DVC_EXP_BASELINE_REV)."""
    return {"name": os.environ.get("DVC_EXP_NAME") or None, "baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV")}


def git_revision(cwd: str | Path | None = None) -> dict[str, Any]:
    """{commit, dirty} of the git checkout at `cwd`; dirty = a tracked file other than the pipeline's outputs
    (dvc.lock, metrics/, plots/) differs from the commit (e.g. params.yaml changed by `dvc exp run -S`).
    Both None outside a git checkout or without git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        exclude = [f":(top,exclude){p}" for p in OUTPUT_PATHS]  # paths from the checkout's root, wherever cwd is
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *exclude],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def model_section(model_config: ModelConfig | dict[str, Any], num_params: int) -> dict[str, Any]:
    """A model's final config, the preset it has the shape of, and its parameter count."""
    model = model_config.to_dict() if isinstance(model_config, ModelConfig) else dict(model_config)
    return {**model, "preset": preset_name(model), "num_params": int(num_params)}


def run_config(
    experiment: Experiment,
    model_config: ModelConfig | dict[str, Any],
    num_params: int,
    objective_config: dict[str, Any],
    data_identity: dict[str, Any] | None,
    **more: Any,
) -> dict[str, Any]:
    """The W&B run config every job records: the model (final config + parameter count), the objective's
    section, the dataset and its prepared-data identity, the experiment, the DVC experiment and the git revision."""
    return {
        "experiment": experiment.to_dict(),
        "model": model_section(model_config, num_params),
        "objective": objective_config,
        "data": {"dataset": experiment.dataset, "identity": data_identity},
        "dvc_experiment": dvc_experiment(),
        "git": git_revision(),
        **more,
    }


def summary_of(name: str) -> str | None:
    """How W&B summarises a metric: `min` for losses and perplexities, `max` for accuracies and match or overlap
    scores, None (the last value) otherwise."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf.endswith(("loss", "perplexity")):
        return "min"
    if leaf.endswith(("accuracy", "exact_match", "rouge_l", "bleu", "compliant")):
        return "max"
    return None


def define_metrics(run: Any) -> None:
    """The step axis of a training run's metrics, the compute axes, and the min/max summaries of the known ones
    (metrics first seen later are defined by `define_new`)."""
    run.define_metric(STEP_METRIC)
    for name in ("train/*", "val/*"):
        run.define_metric(name, step_metric=STEP_METRIC)
    for name in COMPUTE_AXES:
        run.define_metric(name, step_metric=STEP_METRIC)


def define_new(run: Any, names: list[str], defined: set[str]) -> None:
    """Give each metric name not yet in `defined` its min/max summary (see summary_of); adds them to `defined`."""
    for name in names:
        if name in defined:
            continue
        defined.add(name)
        summary = summary_of(name)
        if summary is not None:
            step = {"step_metric": STEP_METRIC} if name.startswith(("train/", "val/")) else {}
            run.define_metric(name, summary=summary, **step)
