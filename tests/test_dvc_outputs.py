"""What DVC shows: metrics files hold numbers only (facts and full results beside them), the curated charts'
tables and templates, and dvc.yaml declaring exactly those as metrics and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_render.vega import VegaRenderer

from lmcore.errors import DataError
from lmcore.eval.curves import FLOOR, curve_rows, write_curves
from lmcore.eval.instruct_report import exact_match_table
from lmcore.eval.instruct_report import headline_metrics as instruct_headline
from lmcore.eval.report import headline_metrics
from lmcore.train.tracking import JsonlTracker, MetricsFileTracker, facts_path, flatten

ROOT = Path(__file__).resolve().parents[1]


def numbers_only(tree: dict) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flatten(tree).values())


def history(path: Path, steps: int, start_loss: float) -> Path:
    tracker = JsonlTracker(path)
    for step in range(1, steps + 1):
        tracker.log({"train/loss": start_loss / step, "train/flops": 1e9 * step}, step)
        if step % 2 == 0:
            tracker.log({"val/loss": start_loss / step + 0.1, "val/flops": 1e9 * step}, step)
        tracker.log_samples(["a sample"], step)  # sample records carry no curve
    return path


def test_metrics_file_holds_numbers_and_facts_go_beside_it(tmp_path):
    path = tmp_path / "train_ar.json"
    facts = {"architecture": "ar", "metric_kind": "exact", "entropy_floor_nats_per_token": 0.3}
    tracker = MetricsFileTracker(path, facts)
    assert not path.exists() and not facts_path(path).exists()  # nothing before the first numbers
    tracker.log({"train/loss": 2.0, "train/lr": 1e-3}, 1)
    tracker.log({"val/loss": 1.5}, 2)
    assert json.loads(path.read_text()) == {"train": {"loss": 2.0, "lr": 1e-3}, "step": 2, "val": {"loss": 1.5}}
    assert json.loads(facts_path(path).read_text()) == facts and facts_path(path).name == "train_ar_facts.json"
    resumed = MetricsFileTracker(path, {**facts, "run_name": "again"}, resume=True)
    resumed.log({"train/loss": 1.0}, 3)
    assert json.loads(path.read_text())["val"] == {"loss": 1.5} and numbers_only(json.loads(path.read_text()))
    assert json.loads(facts_path(path).read_text())["run_name"] == "again"


def test_evaluation_headline_is_the_numbers_of_its_results():
    results = {
        "architecture": "sdd",
        "checkpoint": "checkpoints/sdd/best.pt",
        "step": 301,
        "val": {"loss": 0.55, "perplexity": 1.7, "accuracy": 0.48, "all_accuracy": 0.88, "ignore_accuracy": 0.99},
        "kind": {"val.loss": "denoising_ce"},
        "generation": {"steps": 16, "unconditional": {"validity_rate": 0.0, "gen_perplexity": 13843.6, "valid": 0}},
        "speed": {"device": "cpu", "batched": {"tokens_per_sec": 2500.0, "steps": 16}},
    }
    headline = headline_metrics(results)
    assert headline == {
        "step": 301,
        "val": {"loss": 0.55, "perplexity": 1.7, "accuracy": 0.48, "all_accuracy": 0.88},
        "generation": {"unconditional": {"validity_rate": 0.0, "gen_perplexity": 13843.6}},
        "speed": {"batched": {"tokens_per_sec": 2500.0}},
    }
    ar = headline_metrics({"val": {"loss": 0.4}, "generation": {"steps": None}, "speed": {"batched": {"steps": None}}})
    assert ar == {"val": {"loss": 0.4}}  # AR has no all_accuracy and no steps: left out, not null


def test_instruction_headline_and_chart_rows():
    models = {
        "ar": {
            "pretrained": {"checkpoint": "a.pt", "exact_match": {"overall": 0.0, "count": 0.0, "animal": 0.1}},
            "finetuned": {"checkpoint": "b.pt", "exact_match": {"overall": 0.2, "count": 0.5, "animal": 0.3}},
        },
        "sdd": {"finetuned": {"exact_match": {"overall": 0.05, "count": 0.1, "animal": 0.0}}},
    }
    headline = instruct_headline(models)
    assert headline == {
        "ar": {"exact_match": {"pretrained": 0.0, "finetuned": 0.2}},
        "sdd": {"exact_match": {"finetuned": 0.05}},
    }
    rows = exact_match_table(models)
    assert [r[0] for r in rows] == ["animal"] * 3 + ["count"] * 3 + ["overall"] * 3  # overall last
    assert ["count", "ar", "finetuned", 0.5] in rows and ["animal", "sdd", "finetuned", 0.0] in rows


def test_curves_one_row_per_logged_step_with_the_floor_as_a_series(tmp_path):
    runs = {"ar": history(tmp_path / "ar.jsonl", 6, 6.0), "sdd": history(tmp_path / "sdd.jsonl", 4, 3.0)}
    val = curve_rows(runs, "val", floor=0.3)
    assert [r[:2] for r in val[:3]] == [("ar", 2), ("ar", 4), ("ar", 6)] and val[2][2:] == (6e9, 1.1)
    assert val[-2:] == [(FLOOR, 2, 2e9, 0.3), (FLOOR, 6, 6e9, 0.3)]  # spans the runs on both axes
    assert len(curve_rows(runs, "train")) == 10  # no floor given: runs only
    written = write_curves(runs, tmp_path / "out", floor=None)
    assert [p.name for p in written] == ["train.csv", "val.csv"]
    lines = written[1].read_text().splitlines()
    assert lines[0] == "architecture,step,flops,loss" and lines[1] == "ar,2,2000000000.0,3.1" and len(lines) == 6


def test_curves_errors_name_the_history(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl: no training history"):
        curve_rows({"ar": tmp_path / "missing.jsonl"}, "val")
    only_train = tmp_path / "t.jsonl"
    JsonlTracker(only_train).log({"train/loss": 1.0}, 1)
    with pytest.raises(DataError, match="t.jsonl: no val/loss logged"):
        curve_rows({"ar": only_train}, "val")
    r = subprocess.run(
        [sys.executable, "stages/curves.py", "--run", "ar", str(only_train), "--run", "ar", str(only_train)]
        + ["--output_dir", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip() == "error: --run: each name once, got ar ar"
    assert not (tmp_path / "o").exists()


def declared():
    """(metrics files, plain outputs, stage plots, top-level plots) of the default pipeline, ./dvc.yaml, as DVC
    resolves it; the metrics and outputs as {stage: paths}."""
    from dvc.repo import Repo

    repo = Repo(str(ROOT), uninitialized=True)
    stages = [s for s in repo.index.stages if Path(s.dvcfile.path) == ROOT / "dvc.yaml"]
    metrics, outs, stage_plots = {}, {}, set()
    for stage in stages:
        for out in stage.outs:
            rel = str(Path(out.fs_path).relative_to(ROOT))
            if out.plot:
                stage_plots.add(rel)
            else:
                (metrics if out.metric else outs).setdefault(stage.addressing, set()).add(rel)
    top = {name: spec for item in stages[0].dvcfile.plots for name, spec in item.items()}
    return metrics, outs, stage_plots, top


def test_dvc_yaml_declares_numbers_as_metrics_and_a_short_set_of_charts():
    metrics, stage_outs, stage_plots, top = declared()
    files = set().union(*metrics.values())
    assert len(files) == 12 and all(m.startswith("metrics/") and m.endswith(".json") for m in files)
    assert not any(m.endswith(("_facts.json", "_results.json")) for m in files)
    for stage in metrics:  # a stage's facts or full results are a plain output beside its numbers
        assert any(o.endswith(("_facts.json", "_results.json")) for o in stage_outs[stage]), stage
    outs = set().union(*stage_outs.values())
    # DVCLive folders are outputs, not per-TSV charts.
    assert stage_plots == {"plots/quality_vs_steps.png", "plots/quality_vs_sampling_flops.png"}
    assert {"plots/train_ar", "plots/finetune_sdd", "plots/curves/pretrain", "plots/evaluate_instruct"} <= outs
    assert len(top) == 7
    for name, spec in top.items():
        ((path, field),) = spec["y"].items()
        assert spec["x_label"] and spec["y_label"] and spec["y_label"] != field, name
        assert any(path.startswith(o + "/") for o in outs), f"{name}: {path} is no stage's output"
        assert (ROOT / ".dvc" / "plots" / f"{spec['template']}.json").is_file(), name


@pytest.mark.parametrize(
    "template, x, y, rows",
    [
        (
            "lines_by_architecture",
            "flops",
            "loss",
            [{"architecture": "ar", "step": "2", "flops": "2e9", "loss": "3.1", "rev": "workspace"}],
        ),
        (
            "bars_by_family",
            "family",
            "exact_match",
            [{"family": "count", "architecture": "ar", "model": "finetuned", "exact_match": "0.5", "rev": "workspace"}],
        ),
    ],
)
def test_templates_fill_every_anchor(template, x, y, rows):
    renderer = VegaRenderer(
        rows,
        "chart",
        template=template,
        template_dir=str(ROOT / ".dvc" / "plots"),
        x=x,
        y=y,
        x_label="the x title",
        y_label="the y title",
        title="the title",
    )
    spec = json.dumps(renderer.get_filled_template())
    assert "<DVC_METRIC" not in spec and "the y title" in spec and "the title" in spec
    assert '"field": "architecture"' in spec  # the legend is by architecture, not by file
