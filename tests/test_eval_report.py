"""Evaluation outputs: W&B names and failure handling, JSON writing, the comparison table's kinds."""

from __future__ import annotations

import json

import pytest

from lmcore.eval.generation import Sample
from lmcore.eval.report import comparison_markdown
from lmcore.eval.wandb_log import flatten, log_evaluation, sample_rows
from lmcore.files import write_json


def test_metrics_go_to_wandb_under_eval():
    flat = flatten(
        {"val": {"loss": 1.5, "accuracy": 0.5}, "speed": {"device": "cpu", "batch_1": {"tokens_per_sec": 9}}}
    )
    assert flat == {"eval/val/loss": 1.5, "eval/val/accuracy": 0.5, "eval/speed/batch_1/tokens_per_sec": 9}


def test_samples_table_rows():
    s = Sample([5, 6], [7], True, "Once upon a time", " a time")
    s.meta["valid"] = False
    assert sample_rows({"continuation": [s]}) == [["continuation", "Once upon", " a time", True, False]]


def test_a_wandb_failure_is_a_warning(monkeypatch, capsys):
    import wandb

    def broken(*a, **kw):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    log_evaluation({"architecture": "ar", "step": 3, "val": {"loss": 1.0}}, {}, "p", "eval-ar")
    assert "W&B init failed" in capsys.readouterr().err


def test_json_is_atomic_and_finite(tmp_path):
    path = tmp_path / "m" / "eval.json"
    write_json(path, {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_comparison_shows_kinds_where_they_differ():
    def run(arch: str, loss_kind: str, ppl: float) -> dict:
        return {
            "architecture": arch,
            "val": {"loss": 1.0, "perplexity": ppl},
            "generation": {"unconditional": {"validity_rate": 0.5}, "reference": {"validity_rate": 1.0}},
            "kind": {"val.loss": loss_kind, "val.perplexity": "p", "validity_rate": "grammar_exact"},
        }

    table = comparison_markdown([run("ar", "exact", 2.0), run("diffusion", "nelbo_bound", 3.0)])
    assert "| val loss | 1 (exact) | 1 (nelbo_bound) | – |" in table
    assert "| val perplexity | 2 | 3 | – |" in table  # same kind: no annotation
    assert "| validity rate | 0.5 | 0.5 | 1 |" in table  # reference column from real text
    assert "`nelbo_bound`: continuous-time NELBO" in table


@pytest.mark.parametrize("bad", ["perplexity,bleu", "speed,"])
def test_evaluate_config_names_bad_metrics(bad):
    from lmcore.config import EvaluateConfig
    from lmcore.errors import ConfigError

    if bad.endswith(","):
        assert EvaluateConfig(metrics=bad).metric_groups() == {"speed"}
    else:
        with pytest.raises(ConfigError, match="evaluate.metrics: unknown 'bleu'"):
            EvaluateConfig(metrics=bad)
