"""params.yaml parsing: defaults, strict keys, types, overrides, documented fields."""

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmcore.cli import add_dataclass_flags
from lmcore.config import EvaluateConfig, Params, TrainConfig, apply_overrides, field_help, load_params, parse_params
from lmcore.errors import ConfigError
from lmcore.objectives import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_yaml_is_valid_and_offline_by_default():
    params = load_params(ROOT / "params.yaml")
    assert params.dataset().source.startswith("builtin:")
    assert params.model == "tiny"
    assert params.datasets["tinystories"].source == "hf:roneneldan/TinyStories"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"max_step": 3}}, "train: unknown key 'max_step'"),
        ({"train": {"max_steps": "ten"}}, "train.max_steps: expected an integer"),
        ({"train": {"max_steps": 0}}, "train.max_steps must be positive"),
        ({"data": "nope"}, "data 'nope' is not defined"),
        ({"datasets": {"x": {"sorce": "a"}}, "data": "x"}, "datasets.x: unknown key 'sorce'"),
        ({"train": {"dtype": "fp8"}}, "train.dtype"),
    ],
)
def test_bad_params_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_invalid_yaml_names_the_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="params.yaml: invalid YAML"):
        load_params(p)


def test_overrides_apply_and_are_validated():
    params = parse_params(yaml.safe_load("train: {max_steps: 10, learning_rate: 0.001}"))
    cfg = apply_overrides(params.train, {"max_steps": 20, "learning_rate": None}, "train")
    assert (cfg.max_steps, cfg.learning_rate) == (20, 0.001)
    with pytest.raises(ConfigError, match="train.batch_size"):
        apply_overrides(params.train, {"batch_size": -1}, "train")


def _section_classes(params: Params) -> set[type]:
    """The dataclass of every params.yaml section (each dataset's and each architecture's included)."""
    classes = set()
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        values = value.values() if isinstance(value, dict) else [value]
        classes |= {type(v) for v in values if dataclasses.is_dataclass(v)}
    return classes | {type(params.objective(name)) for name in REGISTRY}


def test_every_section_field_has_help():
    params = Params()
    classes = _section_classes(params)
    assert {cls.Config for cls in REGISTRY.values()} | {TrainConfig, EvaluateConfig} <= classes
    for f in dataclasses.fields(Params):
        assert field_help(f).strip(), f"Params.{f.name} has no help"
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert field_help(f).strip(), f"{cls.__name__}.{f.name} has no help"


def test_train_help_shows_the_fields_own_help():
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--architecture", "sdd", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # argparse wraps long help lines
    train_field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "stop_at_step")
    sdd_field = next(f for f in dataclasses.fields(REGISTRY["sdd"].Config) if f.name == "k_warmup_steps")
    for f in (train_field, sdd_field):
        assert f"--{f.name} {f.name.upper()} {' '.join(field_help(f).split())} [built-in default: {f.default}]" in out


def test_stages_run_as_modules():
    r = subprocess.run(
        [sys.executable, "-m", "stages.finetune", "--help"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert r.returncode == 0 and "--learning_rate" in r.stdout, r.stderr


def test_finetune_is_train_with_the_finetune_section_on_top():
    params = parse_params(
        yaml.safe_load("""
        train: {max_steps: 10, learning_rate: 0.01, batch_size: 4}
        finetune: {learning_rate: 0.001, wandb_project: ft}
    """)
    )
    assert params.finetune == dataclasses.replace(params.train, learning_rate=0.001, wandb_project="ft")
    assert params.train.learning_rate == 0.01
    bare = parse_params({"train": {"max_steps": 10}})
    assert bare.finetune == bare.train  # no fine-tuning values hidden in code


def test_flags_go_through_the_one_override_rule():
    params = parse_params({"train": {"max_steps": 10, "wandb": True}, "sdd": {"k_schedule": [1, 2]}})
    p = argparse.ArgumentParser()
    train_flags = add_dataclass_flags(p, TrainConfig, "train")
    sdd_flags = add_dataclass_flags(p, REGISTRY["sdd"].Config, "sdd")
    a = p.parse_args(["--learning_rate", "0.5", "--no_wandb", "--k_schedule", "1,2,4"])
    cfg = apply_overrides(params.train, {k: getattr(a, k) for k in train_flags}, "train")
    assert cfg == dataclasses.replace(params.train, learning_rate=0.5, wandb=False)
    sdd = apply_overrides(params.objective("sdd"), {k: getattr(a, k) for k in sdd_flags}, "sdd")
    assert sdd.schedule() == [1, 2, 4] and params.objective("sdd").schedule() == [1, 2]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"sdd": {"fixed_k": "two"}}, "sdd.fixed_k: expected an integer"),
        ({"diffusion": {"schedul": "cosine"}}, "diffusion: unknown key 'schedul'"),
        ({"evaluate": {"metrics": "bleu"}}, "evaluate.metrics: unknown 'bleu'"),
        ({"prep_instruct": {"overflow": 3}}, "prep_instruct.overflow: expected a string"),
        ({"finetune": {"learning_rat": 1.0}}, "finetune: unknown key 'learning_rat'"),
        ({"finetune": {"max_steps": 0}}, "train.max_steps must be positive"),
        ({"evaluate_instruct": {"top_p": 0.0}}, "evaluate_instruct: temperature"),
    ],
)
def test_every_section_is_validated_at_load(raw, message):
    """Stage sections fail when params.yaml loads; an objective's section when a stage asks for it."""
    with pytest.raises(ConfigError, match=message):
        params = parse_params(raw)
        for architecture in set(raw) & set(REGISTRY):
            params.objective(architecture)


def test_an_explicit_max_steps_flag_turns_off_a_budget_from_params():
    from lmcore.cli import steps_flags

    assert steps_flags({"max_steps": 4, "flops_budget": None, "tokens_budget": None}) == {
        "max_steps": 4,
        "flops_budget": 0.0,
        "tokens_budget": 0.0,
    }
    both = {"max_steps": 4, "flops_budget": 1e12, "tokens_budget": None}
    assert steps_flags(both) == both  # a budget given as a flag too still decides
    assert steps_flags({"max_steps": None, "flops_budget": None, "tokens_budget": None})["flops_budget"] is None
