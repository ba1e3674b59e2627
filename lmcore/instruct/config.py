"""The params.yaml sections of the instruction stages: `prep_instruct:`, `finetune:` and `evaluate_instruct:`.

Each stage reads only its own section (plus `train:` for fine-tuning), so these are validated here, as
lmcore/eval/config.py does for `evaluate:`; unknown keys and wrong types are errors naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcore.config import TrainConfig, build_dataclass, read_section
from lmcore.errors import ConfigError


@dataclass
class PrepInstructConfig:
    """What prep_instruct builds (params.yaml `prep_instruct:`)."""

    source: str = "builtin:instructions"  # alpaca | dolly | builtin:instructions | hf:OWNER/NAME | a .json/.jsonl
    format: str = "auto"  # auto | alpaca (instruction/input/output) | dolly (instruction/context/response)
    families: str = ""  # builtin:instructions only: comma-separated task families ("" = all)
    num_examples: int = 0  # examples kept (0 = the whole source; required for builtin:instructions)
    max_seq_len: int = 160  # tokens per row: prompt + response + <eos>
    overflow: str = "truncate"  # truncate (the response side) | drop
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 1234
    skip_bad_records: bool = False  # leave invalid records out (counted in config.json) instead of failing


# Fine-tuning defaults where they differ from pretraining's `train:` (the reference plan in the issue); every
# other TrainConfig field comes from `train:` unless `finetune:` sets it. seq_len always comes from the data.
FINETUNE_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-5, "max_steps": 3000, "eval_every": 500, "checkpoint_every": 500, "warmup_steps": 100,
    "wandb_project": "diffusion-lm-finetune",
}


@dataclass
class EvaluateInstructConfig:
    """How evaluate_instruct generates and scores responses (params.yaml `evaluate_instruct:`)."""

    num_examples: int = 0  # test examples evaluated (0 = the whole test split)
    temperature: float = 0.0  # 0 = greedy: exact match measures the model's best answer
    top_p: float = 1.0
    steps: int = 0  # sampling steps for diffusion/SDD (0 = the checkpoint's default)
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    wandb: bool = True
    wandb_project: str = "diffusion-lm-finetune"

    def __post_init__(self) -> None:
        if self.num_examples < 0 or self.steps < 0 or self.batch_size < 1:
            raise ConfigError("evaluate_instruct: num_examples ≥ 0, steps ≥ 0 and batch_size ≥ 1 are required")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ConfigError("evaluate_instruct: temperature ≥ 0 and 0 < top_p ≤ 1 are required")


def load_section(cls: type, params_path: str | Path, name: str, **overrides: Any) -> Any:
    """Dataclass `cls` from params.yaml `name:` with the non-None overrides (command-line flags) on top."""
    section = {**read_section(params_path, name), **{k: v for k, v in overrides.items() if v is not None}}
    return build_dataclass(cls, section, f"{params_path}: {name}")


def finetune_train_config(params_path: str | Path, **overrides: Any) -> TrainConfig:
    """TrainConfig for fine-tuning: `train:`, then FINETUNE_DEFAULTS, then `finetune:`, then flags."""
    train = read_section(params_path, "train")
    merged = {**train, **FINETUNE_DEFAULTS, **read_section(params_path, "finetune"),
              **{k: v for k, v in overrides.items() if v is not None}}
    return build_dataclass(TrainConfig, merged, f"{params_path}: finetune")
