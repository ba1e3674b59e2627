"""The `-S` overrides the docs show work with DVC's own override code, and list params load as lists.

`dvc exp run -S key=value` goes through Hydra's override grammar (dvc.utils.hydra): an unbracketed `1,2,4` is a
sweep of three runs ("Sweep overrides can't be used without --queue"), `[1,2,4]` one list value. Every `-S`
written in README.md or params.yaml is applied here to a copy of params.yaml, which lmcore must then load.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import dvc.utils.hydra as hydra  # DVC's own `-S` code (dvc is a dependency of lmcore)
import pytest
import yaml

from lmcore.config import load_params
from lmcore.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def documented_overrides() -> list[tuple[Path, str]]:
    """(params file, argument) of every `-S` in a `dvc exp run` command of README.md and params.yaml (quotes resolved
    as a shell would), except in `--queue` commands, where a sweep is what is meant. A command after
    `cd pipelines/<study>` in the same code block sets that study's own params.yaml."""
    found = []
    for path in (ROOT / "README.md", ROOT / "params.yaml"):
        folder = ROOT
        for line in path.read_text().replace("\\\n", " ").splitlines():  # shell line continuations joined
            if line.startswith("```"):
                folder = ROOT
            if m := re.search(r"\bcd (pipelines/\w+)", line):
                folder = ROOT / m.group(1)
            for command in re.findall(r"dvc exp run[^`#\n]*", line):
                words = shlex.split(command)
                if "--queue" in words:
                    continue
                params = folder / "params.yaml"
                found += [(params, words[i + 1]) for i, w in enumerate(words[:-1]) if w in ("-S", "--set-param")]
    return found


def is_sweep(override: str) -> bool:
    return any(o.is_sweep_override() for o in hydra.to_hydra_overrides([override]))


def apply(tmp_path: Path, *overrides: str, params: Path = ROOT / "params.yaml"):
    copy = tmp_path / "params.yaml"
    shutil.copy(params, copy)
    hydra.apply_overrides(copy, list(overrides))
    return load_params(copy)


def test_params_yaml_lists_are_lists():
    params = load_params(ROOT / "params.yaml")
    assert params.evaluate.steps_sweep == [4, 16, 64]
    assert params.objective("sdd").schedule() == [1, 2, 4]


def test_every_documented_override_is_one_run_and_loads(tmp_path):
    overrides = documented_overrides()
    root = {o for p, o in overrides if p == ROOT / "params.yaml"}
    assert {"sdd.k_schedule=[1,2,4,8]", "evaluate.steps_sweep=[8,32,128]", "evaluate.steps_sweep=[]"} <= root
    assert any(p.parent.name == "scaling" for p, _ in overrides)  # the scaling study's own params are checked too
    for params, override in overrides:
        assert not is_sweep(override), f"documented `-S {override}` is a DVC sweep (needs brackets)"
        apply(tmp_path, override, params=params)  # loads, or raises a ConfigError naming the param


@pytest.mark.parametrize("quoted", ["'sdd.k_schedule=[1,2,4,8]'", '"sdd.k_schedule=[1, 2, 4, 8]"'])
def test_list_overrides_reach_lmcore_as_lists(tmp_path, quoted):
    (override,) = shlex.split(quoted)  # what the shell hands to dvc
    params = apply(tmp_path, override, "evaluate.steps_sweep=[8,32,128]")
    assert params.objective("sdd").schedule() == [1, 2, 4, 8]
    assert params.evaluate.steps_sweep == [8, 32, 128]
    assert apply(tmp_path, "evaluate.steps_sweep=[]").evaluate.sweep() == []


def test_comma_form_is_a_sweep_to_dvc():
    # Why the docs bracket lists: DVC refuses this without --queue (dvc/repo/experiments/run.py).
    assert is_sweep("sdd.k_schedule=1,2,4,8") and is_sweep("evaluate.steps_sweep=2,4")
    assert not is_sweep("sdd.k_schedule=[1,2,4,8]")


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("sdd", "k_schedule", [1, "two"], "sdd.k_schedule[1]: expected an integer, got 'two'"),
        ("sdd", "k_schedule", "1,x", "sdd.k_schedule: expected integers separated by commas"),
        ("evaluate", "steps_sweep", [4, 1.5], "evaluate.steps_sweep[1]: expected an integer, got 1.5"),
        ("evaluate", "steps_sweep", [4, True], "evaluate.steps_sweep[1]: expected an integer, got True"),
        ("evaluate", "steps_sweep", [4, 0], "evaluate.steps_sweep: every step count must be ≥ 1"),
        ("evaluate", "steps_sweep", {"a": 1}, "evaluate.steps_sweep: expected a list of integers"),
    ],
)
def test_bad_list_values_are_one_line_errors_naming_the_param(tmp_path, section, key, value, message):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_params(tmp_path / "params.yaml").objective("sdd")  # objective sections are read through the registry
    assert message in str(e.value) and "\n" not in str(e.value)
