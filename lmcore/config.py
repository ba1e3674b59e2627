"""Typed configuration: one dataclass per params.yaml section, and load_params() that rejects unknown keys."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmcore.errors import ConfigError


@dataclass
class DatasetConfig:
    """One corpus definition under `datasets:`; `data:` picks which one the pipeline prepares."""

    source: str = "builtin:stories"
    vocab_size: int = 2048
    max_docs: int | None = None  # documents read from the source (train + val); None = all
    val_fraction: float = 0.02  # used when the source has no validation split of its own
    seed: int = 1234
    text_field: str = "text"
    streaming: bool = False  # stream hf: datasets instead of downloading them whole
    tokenizer_sample_docs: int | None = None  # train the tokenizer on the first N train documents only


@dataclass
class PrepareConfig:
    """How data preparation runs (not what it produces)."""

    num_workers: int = 2
    batch_size: int = 1000


@dataclass
class TrainConfig:
    """The one training loop's knobs, shared by every architecture and by fine-tuning."""

    max_steps: int = 400  # length of the LR schedule
    stop_at_step: int = 0  # > 0: stop (and checkpoint) at this step, keeping max_steps' schedule; resume later
    batch_size: int = 32
    seq_len: int = 128
    grad_accum_steps: int = 1
    learning_rate: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 40
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 100
    num_samples: int = 2  # generations printed/logged at each validation
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    compile: bool = False
    gradient_checkpointing: bool = False
    parallel: str = "ddp"  # under torchrun (WORLD_SIZE > 1): ddp | fsdp (FSDP2 fully_shard); ignored for 1 process
    # NaN/inf loss or gradient norm: false stops the run (nothing bad saved); true skips that optimizer step
    # (one host sync per step) and counts it in train/skipped_steps.
    skip_nonfinite_steps: bool = False
    wandb: bool = True
    wandb_init_timeout: float = 15.0  # seconds W&B may take to start online; then it logs offline (wandb sync)
    wandb_project: str = "diffusion-lm"
    wandb_run_name: str | None = None  # default {architecture}-{dataset}-{size}-v{version}
    version: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # NaN passes every comparison below, inf trains to NaN
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"train.{f.name} must be a finite number, got {value}")
        positive = ("max_steps", "batch_size", "seq_len", "grad_accum_steps", "eval_every", "log_every",
                    "checkpoint_every", "eval_batches", "wandb_init_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.stop_at_step <= self.max_steps:
            raise ConfigError(f"train.stop_at_step must be in [0, max_steps={self.max_steps}], got {self.stop_at_step}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be positive, got {self.learning_rate}")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"train.dtype must be auto|bf16|fp16|fp32, got '{self.dtype}'")
        if self.parallel not in ("ddp", "fsdp"):
            raise ConfigError(f"train.parallel must be ddp|fsdp, got '{self.parallel}'")


@dataclass
class Params:
    """The whole params.yaml."""

    data: str = "stories"
    model: str = "tiny"
    datasets: dict[str, DatasetConfig] = field(default_factory=lambda: {"stories": DatasetConfig()})
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Objective-specific sections (ar, diffusion, sdd, ...) are validated by the objective that reads them.
    objectives: dict[str, dict[str, Any]] = field(default_factory=dict)

    def dataset(self) -> DatasetConfig:
        """The dataset definition selected by `data`."""
        if self.data not in self.datasets:
            raise ConfigError(f"params: data '{self.data}' is not defined under datasets: ({', '.join(self.datasets)})")
        return self.datasets[self.data]


OBJECTIVE_SECTIONS = ("ar", "diffusion", "sdd")
# Sections validated by the stage that reads them (evaluate: lmcore/eval/config.py; the instruction stages:
# lmcore/instruct/config.py).
STAGE_SECTIONS = ("evaluate", "prep_instruct", "finetune", "evaluate_instruct")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value to the annotated type, with an error naming the key."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys and wrong types by their dotted name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_params(raw: dict[str, Any], where: str = "params.yaml") -> Params:
    """Validate a params mapping into Params."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    known = {"data", "model", "datasets", "prepare", "train", *OBJECTIVE_SECTIONS, *STAGE_SECTIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    datasets_raw = raw.get("datasets") or {}
    if not isinstance(datasets_raw, dict):
        raise ConfigError(f"{where}: datasets: expected a mapping of name -> definition")
    params = Params(
        data=_coerce(raw.get("data", "stories"), str, f"{where}: data"),
        model=_coerce(raw.get("model", "tiny"), str, f"{where}: model"),
        datasets={n: build_dataclass(DatasetConfig, d, f"{where}: datasets.{n}") for n, d in datasets_raw.items()}
        or {"stories": DatasetConfig()},
        prepare=build_dataclass(PrepareConfig, raw.get("prepare"), f"{where}: prepare"),
        train=build_dataclass(TrainConfig, raw.get("train"), f"{where}: train"),
        objectives={k: raw.get(k) or {} for k in OBJECTIVE_SECTIONS},
    )
    params.dataset()  # `data` must name a defined dataset
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; a missing file gives the built-in defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    return parse_params(raw, where=str(path))


def apply_overrides(obj: Any, overrides: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass `obj` with the non-None overrides applied and validated."""
    values = {k: v for k, v in overrides.items() if v is not None}
    merged = {**dataclasses.asdict(obj), **values}
    return build_dataclass(type(obj), merged, where)


def read_section(params_path: str | Path, name: str) -> dict[str, Any]:
    """The raw mapping `name:` of params.yaml ({} when the file or the section is absent)."""
    path = Path(params_path)
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    section = raw.get(name) if isinstance(raw, dict) else None
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{path}: {name}: expected a mapping")
    return section or {}
