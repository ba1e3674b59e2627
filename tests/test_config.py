"""params.yaml parsing: defaults, strict keys, types, overrides."""
from pathlib import Path

import pytest
import yaml

from lmcore.config import apply_overrides, load_params, parse_params
from lmcore.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_yaml_is_valid_and_offline_by_default():
    params = load_params(ROOT / "params.yaml")
    assert params.dataset().source.startswith("builtin:")
    assert params.model == "tiny"
    assert params.datasets["tinystories"].source == "hf:roneneldan/TinyStories"


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, "unknown key 'trian'"),
    ({"train": {"max_step": 3}}, "train: unknown key 'max_step'"),
    ({"train": {"max_steps": "ten"}}, "train.max_steps: expected an integer"),
    ({"train": {"max_steps": 0}}, "train.max_steps must be positive"),
    ({"data": "nope"}, "data 'nope' is not defined"),
    ({"datasets": {"x": {"sorce": "a"}}, "data": "x"}, "datasets.x: unknown key 'sorce'"),
    ({"train": {"dtype": "fp8"}}, "train.dtype"),
])
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
