"""The scaling study's pipeline (pipelines/scaling): its params and their validation, the DVC matrix it expands to,
and the fit_scaling stage on synthetic runs whose laws and compute multiplier are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmcore.config import ScalingConfig, load_params, parse_params
from lmcore.errors import ConfigError
from lmcore.eval.scaling_report import analyse, run_name
from lmcore.models import PRESETS, resolve_model_config

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "scaling"


def test_scaling_params_are_valid_and_span_0_1m_to_tiny():
    params = load_params(PIPELINE / "params.yaml")
    grid = params.scaling
    assert grid.arch_list() == ["ar", "diffusion", "sdd"]
    assert grid.size_list()[0] == "nano" and "tiny" in grid.size_list()
    assert grid.budget_values() == sorted(grid.budget_values()) and len(grid.budget_values()) >= 2
    assert params.train.wandb is False and params.train.num_samples == 0  # no sampling, offline
    # Non-embedding parameters (4·d² attention + 2·d·d_ff MLP per layer) grow from ~0.02M to tiny's ~0.8M.
    sizes = [resolve_model_config(s) for s in grid.size_list()]
    non_embedding = [c.n_layers * (4 * c.d_model**2 + 2 * c.d_model * c.d_ff) for c in sizes]
    assert non_embedding == sorted(non_embedding) and non_embedding[-1] == 786_432
    with_vocab_2k = [n + 2048 * c.d_model for n, c in zip(non_embedding, sizes)]
    assert 0.05e6 < with_vocab_2k[0] < 0.15e6  # the ~0.1M end of the grid


def test_matrix_expands_to_every_architecture_size_and_budget():
    from dvc.repo import Repo

    grid = load_params(PIPELINE / "params.yaml").scaling
    names = {s.name for s in Repo(str(PIPELINE), uninitialized=True).index.stages}
    runs = {
        f"train@{run_name(a, s, b)}" for a in grid.arch_list() for s in grid.size_list() for b in grid.budget_list()
    }
    assert names == runs | {"prep", "fit_scaling"}


def test_the_study_is_a_subrepo_the_top_level_project_does_not_see():
    """Its checkpoints and corpus are not in git, so a top-level `dvc status` / `metrics show` / `plots show` must not
    read its stages: pipelines/scaling is a DVC subrepo (its own .dvc/), whose outputs all stay inside it."""
    from dvc.repo import Repo

    assert (PIPELINE / ".dvc" / "config").is_file()
    top = Repo(str(ROOT), uninitialized=True).index.stages
    assert not [s for s in top if Path(s.path).is_relative_to(PIPELINE)]
    for stage in Repo(str(PIPELINE), uninitialized=True).index.stages:
        assert Path(stage.wdir) == PIPELINE
        assert all(Path(o.fs_path).resolve().is_relative_to(PIPELINE) for o in stage.outs), stage.name


@pytest.mark.parametrize(
    "scaling, message",
    [
        ({"sizes": ["nano", "huge"]}, "p.yaml: scaling.sizes: unknown size 'huge' (presets: nano, micro"),
        ({"sizes": "nano,missing.yaml"}, "p.yaml: scaling.sizes: unknown size 'missing.yaml'"),
        ({"architectures": ["ar", "gpt"]}, "p.yaml: scaling.architectures: unknown 'gpt' (known: ar, diffusion, sdd)"),
        ({"budgets": ["1e12", "lots"]}, "p.yaml: scaling.budgets: 'lots' is not a number of FLOPs"),
        ({"budgets": ["1e12", "-1e12"]}, "p.yaml: scaling.budgets: '-1e12' must be a finite positive number"),
        ({"budgets": []}, "p.yaml: scaling.budgets: the list is empty"),
        ({"sizes": ["nano", "nano"]}, "p.yaml: scaling.sizes: repeated entries"),
        ({"per_decade": 0}, "p.yaml: scaling.per_decade must be ≥ 1"),
        ({"sizez": ["nano"]}, "p.yaml: scaling: unknown key 'sizez'"),
    ],
)
def test_bad_grid_is_a_one_line_error_naming_the_file(scaling, message):
    with pytest.raises(ConfigError) as e:
        parse_params({"scaling": scaling}, "p.yaml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_grid_accepts_lists_strings_numbers_and_model_files(tmp_path):
    model = tmp_path / "wide.yaml"
    model.write_text("d_model: 64\nn_heads: 2\nn_layers: 1\nd_ff: 128\n")
    grid = ScalingConfig(architectures="ar, sdd", sizes=["nano", str(model)], budgets=[1e12, "3e12"])
    assert grid.arch_list() == ["ar", "sdd"] and grid.size_list() == ["nano", str(model)]
    assert grid.budget_values() == [1e12, 3e12] and grid.budget_list() == ["1000000000000.0", "3e12"]
    assert run_name("ar", str(model), "3e12") == "ar-wide-3e12"
    assert {"nano", "micro", "mini", "tiny"} <= set(PRESETS)


def test_bad_size_stops_the_pipeline_at_its_first_stage(tmp_path):
    params = yaml.safe_load((PIPELINE / "params.yaml").read_text())
    params["scaling"]["sizes"] = ["nano", "gigantic"]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = tmp_path / "corpus"
    r = subprocess.run(
        [sys.executable, "stages/prep_tinystories.py", "--params", str(bad), "--output_dir", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.strip().splitlines() == [
        f"error: {bad}: scaling.sizes: unknown size 'gigantic' (presets: {', '.join(PRESETS)}; or a path to a "
        ".yaml/.json model file)"
    ]


# ------------------------------------------------------------------ fit_scaling on synthetic runs
E, A, ALPHA, SHIFT = 1.5, 2.0 * 1e12**0.2, 0.2, 4.0  # AR's law; diffusion needs SHIFT× AR's compute for any loss


def law(c):
    return E + A * np.asarray(c, dtype=float) ** (-ALPHA)


def write_runs(root: Path, grid: ScalingConfig) -> None:
    """Each size follows the law up to its capacity (a plateau that grows with size), each budget's run is evaluated
    every 1/12 decade up to its budget; diffusion's runs are AR's with every compute multiplied by SHIFT."""
    for arch, kind, scale in (("ar", "exact", 1.0), ("diffusion", "nelbo_bound", SHIFT)):
        for i, size in enumerate(grid.size_list()):
            cap = 1e11 * 10**i  # compute beyond which this size stops improving
            for budget, value in zip(grid.budget_list(), grid.budget_values()):
                name = run_name(arch, size, budget)
                compute = np.geomspace(1e10, value, round(12 * float(np.log10(value / 1e10))) + 1)
                lines = [
                    json.dumps(
                        {"step": j + 1, "metrics": {"val/loss": float(law(min(c, cap))), "val/flops": c * scale}}
                    )
                    for j, c in enumerate(compute)
                ]
                (root / "runs" / name).mkdir(parents=True)
                (root / "runs" / name / "history.jsonl").write_text("\n".join(lines) + "\n")
                (root / "metrics").mkdir(exist_ok=True)
                (root / "metrics" / f"{name}.json").write_text(
                    json.dumps({"metric_kind": kind, "entropy_floor_nats_per_token": 1.2})
                )


def test_fit_scaling_recovers_the_laws_and_the_multiplier(tmp_path):
    grid = ScalingConfig(architectures="ar,diffusion", sizes="nano,micro,mini", budgets="1e12,1e13", per_decade=6)
    write_runs(tmp_path, grid)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "scaling": {
                    "architectures": "ar,diffusion",
                    "sizes": "nano,micro,mini",
                    "budgets": "1e12,1e13",
                    "per_decade": 6,
                }
            }
        )
    )
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "stages/fit_scaling.py", "--params", str(params), "--runs_dir", str(tmp_path / "runs"),
         "--run_metrics_dir", str(tmp_path / "metrics"), "--output", str(out / "fit.json"),
         "--report", str(out / "report.md"), "--plot", str(out / "scaling.png")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    fit = json.loads((out / "fit.json").read_text())
    # The frontier is the law itself (each size plateaus where the next takes over), so the fit is exact.
    assert fit["ar"]["E"] == pytest.approx(E, rel=1e-3) and fit["ar"]["alpha"] == pytest.approx(ALPHA, rel=1e-3)
    assert fit["ar"]["A"] == pytest.approx(A, rel=1e-2) and fit["ar"]["runs"] == 6
    assert fit["diffusion"]["alpha"] == pytest.approx(ALPHA, rel=1e-3)
    assert fit["diffusion"]["A"] == pytest.approx(A * SHIFT**ALPHA, rel=1e-2)  # L(C/4) = E + A·4^α·C^(−α)
    mult = fit["diffusion"]["multiplier_vs_ar"]
    assert mult["measured"] == pytest.approx(SHIFT, rel=1e-6) and mult["fitted"] == pytest.approx(SHIFT, rel=1e-3)
    assert mult["published"] == 16.0 and mult["ar_at_first"] == 0.0
    assert fit["ar"]["flops_min"] == pytest.approx(1e10) and fit["ar"]["flops_max"] == pytest.approx(1e13)
    numbers = [v for row in fit.values() for v in row.values() if not isinstance(v, dict)]
    assert all(v is None or isinstance(v, (int, float)) for v in numbers)
    report = (out / "report.md").read_text()
    assert "| diffusion | nelbo_bound | 6 |" in report and "4.00×" in report and "Nie et al. 2024" in report
    assert "extrapolation" in report and "1.2000 nats/token" in report
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "diffusion: L(C) = 1.5000" in r.stdout and "4.00× AR's compute" in r.stdout


def test_a_missing_run_is_a_one_line_error(tmp_path):
    grid = ScalingConfig(architectures="ar", sizes="nano,micro", budgets="1e12")
    write_runs(tmp_path, ScalingConfig(architectures="ar", sizes="nano", budgets="1e12"))
    with pytest.raises(Exception) as e:
        analyse(tmp_path / "runs", tmp_path / "metrics", grid)
    assert "ar-micro-1e12/history.jsonl: missing; the grid's run ar-micro-1e12 has not trained" in str(e.value)
