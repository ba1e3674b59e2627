"""W&B runs of one experiment, read back from the offline run files: a tiny pretraining, its fine-tune, an
evaluation of each and an instruction evaluation share a group, carry their job types and names, and record the
model, the objective's section, the data's identity, the DVC experiment and the git revision; training metrics
have the step axis and min/max summaries; checkpoints become a `model` artifact when asked."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from wandb_offline import OfflineRun, read_run

from lmcore.config import EvaluateConfig, EvaluateInstructConfig, TrainConfig
from lmcore.data import load_meta
from lmcore.data.instruct_dataset import load_config
from lmcore.data.instruct_prepare import prepare_instructions, resolve_tokenizer
from lmcore.data.instruct_sources import iter_examples
from lmcore.data.integrity import corpus_identity, instruct_identity
from lmcore.eval.instruct import compare
from lmcore.eval.runner import evaluate
from lmcore.eval.wandb_log import log_evaluation, log_instruct_results
from lmcore.models import PRESETS, ModelConfig
from lmcore.objectives import get_objective
from lmcore.train.checkpoint import load_checkpoint, load_model
from lmcore.train.experiment import checkpoint_experiment, git_revision, new_experiment, summary_of
from lmcore.train.run import Outputs, finetune, pretrain

ROOT = Path(__file__).resolve().parents[1]


def train_cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=8,
        batch_size=4,
        seq_len=32,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_every=2,
        eval_batches=1,
        log_every=2,
        checkpoint_every=8,
        num_samples=0,
        device="cpu",
        wandb=True,
        wandb_project="lmcore-test",
        version=3,
    )
    return TrainConfig(**{**base, **kw})


def offline_runs(wandb_dir: Path) -> dict[str, OfflineRun]:
    runs = [read_run(d) for d in sorted((wandb_dir / "wandb").glob("offline-run-*"))]
    assert runs and all(r.finished for r in runs), "an offline run's log is incomplete"
    return {r.run.display_name: r for r in runs}


@pytest.fixture(scope="module")
def experiment_runs(corpus, tmp_path_factory) -> dict:
    """Pretrain diffusion (tiny preset), fine-tune it, evaluate both and compare them, all logged offline to W&B
    from inside a (pretend) `dvc exp run` named exp-wandb-test."""
    root = tmp_path_factory.mktemp("wandb_runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_DIR", str(root))
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("DVC_EXP_NAME", "exp-wandb-test")
    mp.setenv("DVC_EXP_BASELINE_REV", "0" * 40)
    try:
        objective = get_objective("diffusion", {"schedule": "cosine"})
        experiment = new_experiment("stories", "tiny", 3)
        pre = root / "pre"
        pretrain(
            objective,
            ModelConfig(**PRESETS["tiny"]),
            train_cfg(wandb_log_checkpoints=True),
            corpus,
            Outputs(pre),
            experiment.run_name("diffusion"),
            experiment=experiment,
        )
        instruct = root / "instruct"
        tok, facts = resolve_tokenizer(corpus, None)
        prepare_instructions(
            iter_examples("builtin:instructions", families="count", seed=3),
            tok,
            instruct,
            max_seq_len=84,
            num_examples=80,
            val_fraction=0.1,
            test_fraction=0.1,
            seed=3,
            facts=facts,
        )
        ft = root / "ft"
        finetune(pre / "best.pt", instruct, train_cfg(max_steps=4, eval_every=2, checkpoint_every=4), Outputs(ft))
        eval_cfg = EvaluateConfig(
            metrics="perplexity,accuracy,generation",
            num_samples=2,
            num_continuations=0,
            length=32,
            steps=2,
            steps_sweep="",
            batch_size=2,
            judge="",
            device="cpu",
        )
        ev = evaluate(pre / "best.pt", corpus, eval_cfg)
        log_evaluation(ev.results, ev.samples, "lmcore-test", None, ev.checkpoint_info)
        infos: dict = {}
        icfg = EvaluateInstructConfig(num_examples=2, steps=2, batch_size=2, device="cpu")
        models, responses = compare([ft / "best.pt"], instruct, icfg, None, infos)
        log_instruct_results(
            {"data_dir": str(instruct), "settings": {}, "models": models},
            responses,
            "lmcore-test",
            checkpoint_infos=infos,
        )
    finally:
        import wandb

        wandb.teardown()  # stops W&B's writer process: the run files are complete on disk when read below
        mp.undo()
    return {"runs": offline_runs(root), "pre": pre, "ft": ft, "corpus": corpus, "eval": ev, "instruct": instruct}


def test_one_group_with_job_types_and_names(experiment_runs):
    runs = experiment_runs["runs"]
    assert {name: (r.run.run_group, r.run.job_type) for name, r in runs.items()} == {
        "diffusion-stories-tiny-v3": ("exp-wandb-test", "pretrain"),
        "diffusion-stories-tiny-v3-instruct": ("exp-wandb-test", "finetune"),
        "diffusion-stories-tiny-v3-eval": ("exp-wandb-test", "eval"),
        "diffusion-stories-tiny-v3-instruct-eval": ("exp-wandb-test", "eval"),
    }


def test_pretraining_config_describes_model_objective_data_and_code(experiment_runs):
    config = experiment_runs["runs"]["diffusion-stories-tiny-v3"].config
    ckpt = load_checkpoint(experiment_runs["pre"] / "best.pt")
    n_params = sum(p.numel() for p in load_model(experiment_runs["pre"] / "best.pt").model.parameters())
    assert config["model"] == {**ckpt["model_config"], "preset": "tiny", "num_params": n_params}
    assert config["objective"] == ckpt["objective_config"] and config["objective"]["schedule"] == "cosine"
    identity = corpus_identity(load_meta(experiment_runs["corpus"]))
    assert config["data"] == {"dataset": "stories", "identity": identity}
    assert config["experiment"] == {"dataset": "stories", "size": "tiny", "version": 3, "group": "exp-wandb-test"}
    assert config["dvc_experiment"] == {"name": "exp-wandb-test", "baseline_rev": "0" * 40}
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert config["git"]["commit"] == head and isinstance(config["git"]["dirty"], bool)
    assert config["train"]["max_steps"] == 8 and config["train"]["wandb_log_checkpoints"] is True
    assert ckpt["experiment"] == config["experiment"]  # what a later fine-tune or evaluation joins


def test_training_metrics_have_a_step_axis_and_best_value_summaries(experiment_runs):
    run = experiment_runs["runs"]["diffusion-stories-tiny-v3"]
    assert run.metrics["train/step"].options.defined
    for glob in ("train/*", "val/*"):
        assert run.metrics[glob].step_metric == "train/step"
    for axis in ("train/flops", "train/seconds", "val/flops", "val/seconds"):
        assert run.metrics[axis].step_metric == "train/step"
    assert run.metrics["val/loss"].summary.min and run.metrics["train/loss"].summary.min
    assert run.metrics["val/accuracy"].summary.max
    val = [row["val/loss"] for row in run.history if "val/loss" in row]
    assert len(val) == 4  # eval_every=2 over 8 steps
    assert run.summary["val/loss"] == {"min": pytest.approx(min(val), rel=1e-12)}
    assert run.summary["val/loss"]["min"] == pytest.approx(
        load_checkpoint(experiment_runs["pre"] / "best.pt")["best_val_loss"]
    )
    assert all(row["train/step"] == row["_step"] for row in run.history if "train/step" in row)
    assert [row["train/step"] for row in run.history if "train/loss" in row] == [2, 4, 6, 8]


def test_checkpoints_become_a_model_artifact_only_when_asked(experiment_runs):
    runs = experiment_runs["runs"]
    (artifact,) = [a for a in runs["diffusion-stories-tiny-v3"].artifacts if a.type == "model"]
    assert (artifact.type, artifact.name) == ("model", "diffusion-stories-tiny-v3")
    assert sorted(e.path for e in artifact.manifest.contents) == ["best.pt", "latest.pt"]
    assert set(artifact.aliases) >= {"latest", "step-8"}
    assert runs["diffusion-stories-tiny-v3-instruct"].artifacts == []  # the option is off there (and no samples)


def test_finetune_and_evaluations_record_what_they_ran_on(experiment_runs):
    runs = experiment_runs["runs"]
    ft = runs["diffusion-stories-tiny-v3-instruct"].config
    assert ft["parent"]["path"] == str(experiment_runs["pre"] / "best.pt")
    assert ft["experiment"]["group"] == "exp-wandb-test" and ft["model"]["preset"] == "tiny"
    assert ft["data"] == {"dataset": "stories", "identity": instruct_identity(load_config(experiment_runs["instruct"]))}
    ev = runs["diffusion-stories-tiny-v3-eval"]
    assert ev.config["model"]["num_params"] == experiment_runs["eval"].results["num_params"]
    assert ev.config["checkpoint"]["path"] == str(experiment_runs["pre"] / "best.pt")
    assert ev.config["objective"]["schedule"] == "cosine"
    assert ev.summary["eval/val/loss"] == pytest.approx(experiment_runs["eval"].results["val"]["loss"])
    instruct = runs["diffusion-stories-tiny-v3-instruct-eval"].config
    assert set(instruct["models"]) == {"diffusion/finetuned", "diffusion/pretrained"}
    assert instruct["models"]["diffusion/finetuned"]["checkpoint"]["kind"] == "finetune"


def test_group_outside_dvc_and_for_older_checkpoints(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    exp = new_experiment("stories", "small", 2)
    assert (exp.group, exp.run_name("sdd", "-instruct")) == ("stories-small-v2", "sdd-stories-small-v2-instruct")
    old = {
        "data_dir": "data/corpus",
        "model_config": {**PRESETS["xl"], "vocab_size": 9},
        "train_config": {"version": 4},
    }
    assert checkpoint_experiment(old) == new_experiment("corpus", "xl", 4)
    assert checkpoint_experiment({"experiment": dataclasses.asdict(exp)}) == exp


def test_summaries_by_metric_name():
    assert [summary_of(n) for n in ("val/loss", "val/best_loss", "train/perplexity", "val/all_accuracy")] == [
        "min",
        "min",
        "min",
        "max",
    ]
    assert summary_of("instruct/ar/finetuned/exact_match") == "max" and summary_of("train/lr") is None


def test_git_revision_is_dirty_for_code_not_for_pipeline_outputs(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "metrics").mkdir()
    for name in ("params.yaml", "dvc.lock", "metrics/m.json"):
        (tmp_path / name).write_text("a\n")
    git("add", ".")
    git("commit", "-qm", "x")
    assert git_revision(tmp_path)["dirty"] is False
    (tmp_path / "dvc.lock").write_text("b\n")
    (tmp_path / "metrics/m.json").write_text("b\n")
    (tmp_path / "new_untracked.txt").write_text("b\n")
    assert git_revision(tmp_path)["dirty"] is False
    (tmp_path / "params.yaml").write_text("b\n")
    rev = git_revision(tmp_path)
    assert rev["dirty"] is True and len(rev["commit"]) == 40
    assert git_revision(tmp_path / "metrics") == rev  # the same answer from a subfolder
    assert git_revision("/") == {"commit": None, "dirty": None}
