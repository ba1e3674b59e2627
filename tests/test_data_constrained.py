"""The data-constrained experiment (pipelines/data_constrained): its params, the epochs each run saw, and the report's
verdict on whether AR and diffusion change order with repetition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmcore.config import load_params, parse_params
from lmcore.errors import DataError
from lmcore.eval.data_constrained import analyse, epochs
from lmcore.eval.scaling_report import run_name

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "data_constrained"
PARAMS = PIPELINE / "params.yaml"


def test_experiment_params_cover_4_to_100_epochs_at_one_size():
    params = load_params(PARAMS)
    grid = params.scaling
    assert grid.arch_list() == ["ar", "diffusion"] and grid.size_list() == ["micro"]
    assert params.datasets["stories"].max_docs == 150 and params.train.num_samples == 0
    # One AR step reads 16 × 160 tokens; the prepared corpus' 150 train stories hold 20,608 tokens, and a step costs
    # 3.2e9 FLOPs with micro (lmcore/train/perf.py), so the budgets span ~4 to ~100 AR epochs.
    steps = [b / 3.2e9 for b in grid.budget_values()]
    ar_epochs = [epochs("ar", round(s), params, tokens=20_608, documents=150) for s in steps]
    assert 3 < ar_epochs[0] < 5 and 90 < ar_epochs[-1] < 110


def test_the_experiment_is_a_subrepo_with_its_runs_inside_it():
    """Like pipelines/scaling: the top-level project does not see its stages (its checkpoints are not in git); each
    run trains from the experiment's own corpus into its own folder."""
    from dvc.repo import Repo

    top = Repo(str(ROOT), uninitialized=True).index.stages
    assert not [s for s in top if Path(s.path).is_relative_to(PIPELINE)]
    stages = {s.name: s for s in Repo(str(PIPELINE), uninitialized=True).index.stages}
    train = stages["train@ar-micro-1e11"]
    assert "--data_dir data/corpus --checkpoint_dir checkpoints/ar-micro-1e11" in train.cmd
    assert {Path(o.fs_path) for o in train.outs} == {
        PIPELINE / "checkpoints" / "ar-micro-1e11",
        PIPELINE / "metrics" / "runs" / "ar-micro-1e11.json",
    }
    assert PIPELINE / "checkpoints" in [Path(d.fs_path) for d in stages["report"].deps]


def test_epochs_count_tokens_for_windows_and_rows_for_documents():
    params = parse_params({"train": {"batch_size": 8, "seq_len": 100, "grad_accum_steps": 2}})
    assert epochs("ar", 10, params, tokens=16_000, documents=50) == pytest.approx(10 * 16 * 100 / 16_000)
    assert epochs("diffusion", 10, params, tokens=16_000, documents=50) == pytest.approx(10 * 16 / 50)


AR = {"1e11": (3.0, 3.0), "1e12": (2.5, 2.2)}  # budget → (final, best): AR over-fits at the larger budget
DIFFUSION = {"1e11": (3.6, 3.6), "1e12": (2.1, 2.1)}


def write_experiment(root: Path, steps: dict[str, int]) -> Path:
    params = {
        "scaling": {"architectures": ["ar", "diffusion"], "sizes": ["micro"], "budgets": list(AR)},
        "train": {"batch_size": 16, "seq_len": 160},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data").mkdir()
    (root / "data" / "meta.json").write_text(json.dumps({"splits": {"train": {"tokens": 20_480, "documents": 160}}}))
    for arch, kind, table in (("ar", "exact", AR), ("diffusion", "nelbo_bound", DIFFUSION)):
        for budget, (final, best) in table.items():
            name = run_name(arch, "micro", budget)
            n = steps[budget]
            records = [
                {"step": n // 2, "metrics": {"val/loss": best, "val/flops": float(budget) / 2}},
                {"step": n, "metrics": {"val/loss": final, "val/flops": float(budget)}},
            ]
            (root / "runs" / name).mkdir(parents=True)
            (root / "runs" / name / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            (root / "metrics").mkdir(exist_ok=True)
            (root / "metrics" / f"{name}.json").write_text(json.dumps({"metric_kind": kind}))
    return root / "params.yaml"


def test_report_gives_epochs_losses_and_the_flip(tmp_path):
    params = write_experiment(tmp_path, {"1e11": 32, "1e12": 320})
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "stages/data_constrained.py", "--params", str(params), "--runs_dir", str(tmp_path / "runs"),
         "--run_metrics_dir", str(tmp_path / "metrics"), "--data_dir", str(tmp_path / "data"),
         "--output", str(out / "result.json"), "--report", str(out / "report.md"), "--plot", str(out / "epochs.png")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "result.json").read_text())
    ar = result["runs"]["ar-micro-1e12"]
    assert ar["epochs"] == pytest.approx(320 * 16 * 160 / 20_480) and ar["steps"] == 320  # 40 passes over the tokens
    assert result["runs"]["diffusion-micro-1e12"]["epochs"] == pytest.approx(320 * 16 / 160)  # 32 over the stories
    assert (ar["final_loss"], ar["best_loss"]) == (2.5, 2.2)
    gaps = result["diffusion_minus_ar"]
    assert gaps["1e+11"]["best_gap"] == pytest.approx(0.6) and gaps["1e+12"]["best_gap"] == pytest.approx(-0.1)
    assert gaps["1e+12"]["final_gap"] == pytest.approx(-0.4)
    report = (out / "report.md").read_text()
    assert "| ar-micro-1e12 | 1e+12 | 320 | 40.0 | 2.5000 | 2.2000 |" in report
    assert "The order flips: diffusion's best loss is below AR's at 1e+12 FLOPs" in report
    assert (out / "epochs.png").read_bytes()[:4] == b"\x89PNG"


def test_more_than_one_size_is_refused(tmp_path):
    params = write_experiment(tmp_path, {"1e11": 32, "1e12": 320})
    raw = yaml.safe_load(params.read_text())
    raw["scaling"]["sizes"] = ["micro", "mini"]
    with pytest.raises(DataError, match="uses one size"):
        analyse(tmp_path / "runs", tmp_path / "metrics", tmp_path / "data", parse_params(raw, "p.yaml"))
