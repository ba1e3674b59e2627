"""Per-architecture pretraining values: an architecture's section may hold `train:` values that go on top of the
shared `train:` (lmcore/config.py Params.train_for), the same override rule as `finetune:` and the flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lmcore.config import ConfigError, apply_overrides, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]

RAW = """
train: {max_steps: 10, learning_rate: 0.002, batch_size: 32}
ar: {train: {learning_rate: 0.004, batch_size: 16}}
diffusion: {schedule: cosine, train: {learning_rate: 0.008}}
finetune: {learning_rate: 0.001}
"""


def test_an_architecture_gets_train_with_its_own_values_on_top():
    params = parse_params(yaml.safe_load(RAW))
    assert params.train_for("ar") == dataclasses.replace(params.train, learning_rate=0.004, batch_size=16)
    assert params.train_for("diffusion") == dataclasses.replace(params.train, learning_rate=0.008)
    assert params.train_for("sdd") == params.train  # no section: the shared values
    assert params.objective("diffusion").schedule == "cosine"  # `train:` is not an objective setting
    # Flags go on top of the architecture's values, by the one rule.
    cfg = apply_overrides(params.train_for("ar"), {"learning_rate": 0.1, "batch_size": None}, "train")
    assert (cfg.learning_rate, cfg.batch_size) == (0.1, 16)
    assert params.finetune.learning_rate == 0.001 and params.finetune.batch_size == 32  # fine-tuning: train: only


@pytest.mark.parametrize(
    "section,message",
    [
        ({"train": {"learning_rat": 0.1}}, "params.yaml: ar.train: unknown key 'learning_rat'"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be positive"),
        ({"train": [1, 2]}, "params.yaml: ar.train: expected a mapping"),
    ],
)
def test_bad_per_architecture_values_fail_when_params_load(section, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_params({"train": {"max_steps": 10}, "ar": section})


def test_the_default_params_state_each_architectures_values():
    """params.yaml's own per-architecture values load and differ from `train:` only where they say."""
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in ("ar", "diffusion", "sdd"):
        own = (raw.get(name) or {}).get("train") or {}
        cfg = params.train_for(name)
        assert {k: getattr(cfg, k) for k in own} == own
        others = {f.name for f in dataclasses.fields(cfg)} - set(own)
        assert all(getattr(cfg, k) == getattr(params.train, k) for k in others)
