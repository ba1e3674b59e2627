"""Evaluation results to W&B: numbers under `eval/...` (`instruct/...` for instruction following), the samples or
responses as a table. Never fatal.

An evaluation run joins the experiment of the checkpoint it evaluates (lmcore/train/experiment.py): the same
W&B group as its pretraining and fine-tuning runs, job type `eval`, named after the checkpoint's run with
`-eval`; its config holds the checkpoint's model, objective, data identity, the DVC experiment and git revision."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from lmcore.eval.generation import Sample
from lmcore.train.experiment import (
    Experiment,
    checkpoint_experiment,
    dvc_experiment,
    git_revision,
    model_section,
    run_config,
)
from lmcore.train.tracking import WandbTracker

if TYPE_CHECKING:  # a type only: importing lmcore.eval.instruct loads the ROUGE and BLEU scorers
    from lmcore.eval.instruct import Response


def flatten(tree: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """{"val": {"loss": 1.0}} → {"eval/val/loss": 1.0}; numeric leaves only (kinds and facts are config)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def sample_rows(samples: dict[str, list[Sample]]) -> list[list[Any]]:
    """One table row per sample: section, prompt, generated text, ended, valid."""
    rows = []
    for section, items in samples.items():
        for s in items:
            prompt = s.text[: len(s.text) - len(s.continuation)] if s.prompt_ids else ""
            rows.append([section, prompt, s.continuation, bool(s.ended), s.meta.get("valid")])
    return rows


def checkpoint_run(info: dict[str, Any], **more: Any) -> tuple[Experiment, dict[str, Any]]:
    """The experiment of an evaluated checkpoint and the W&B config describing it (`info`: LoadedModel.info plus
    `model_config` and `num_params`)."""
    experiment = checkpoint_experiment(info)
    config = run_config(
        experiment,
        info.get("model_config") or {},
        int(info.get("num_params") or 0),
        info.get("objective_config") or {},
        info.get("data_identity"),
        checkpoint={k: info.get(k) for k in ("path", "kind", "global_step", "best_val_loss", "parent")},
        **more,
    )
    return experiment, config


def eval_run_name(experiment: Experiment, architecture: str, kind: str | None) -> str:
    """`{architecture}-{dataset}-{size}-v{version}[-instruct]-eval`: the evaluated run's name + `-eval`."""
    return experiment.run_name(architecture, ("-instruct" if kind == "finetune" else "") + "-eval")


def log_evaluation(
    results: dict[str, Any],
    samples: dict[str, list[Sample]],
    project: str,
    run_name: str | None = None,
    checkpoint_info: dict[str, Any] | None = None,
) -> None:
    """One W&B run (online with credentials, offline otherwise) holding the metrics and a samples table, in the
    group of the evaluated checkpoint's experiment (`checkpoint_info`: see checkpoint_run)."""
    numbers = {k: v for k, v in results.items() if k not in ("kind", "kind_notes", "timing")}
    evaluation = {k: v for k, v in results.items() if isinstance(v, (str, int, float)) or k in ("kind", "judge")}
    arch = str(results.get("architecture"))
    experiment, config = checkpoint_run(
        {"data_dir": results.get("data_dir"), **(checkpoint_info or {})}, evaluation=evaluation
    )
    name = run_name or eval_run_name(experiment, arch, (checkpoint_info or {}).get("kind"))
    tracker = WandbTracker(project, name, config, group=experiment.group, job_type="eval")
    try:
        step = int(results.get("step") or 0)
        tracker.log(flatten(numbers), step)
        tracker.log_table("eval/samples", ["section", "prompt", "text", "eos", "valid"], sample_rows(samples), step)
    except Exception as e:
        print(f"warning: W&B logging failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
    finally:
        tracker.close()


def response_rows(responses: dict[str, list[Response]]) -> list[list[Any]]:
    """One table row per instruction response: model, family, instruction, input, reference, response, eos, exact."""
    return [
        [
            name,
            r.example.get("family"),
            r.example["instruction"],
            r.example.get("input", ""),
            r.example["output"],
            r.text,
            r.ended,
            r.scores.get("exact_match"),
        ]
        for name, items in responses.items()
        for r in items
    ]


def log_instruct_results(
    results: dict[str, Any],
    responses: dict[str, list[Response]],
    project: str,
    run_name: str | None = None,
    checkpoint_infos: dict[str, dict[str, Any]] | None = None,
) -> None:
    """One W&B run (online with credentials, offline otherwise) with `instruct/...` metrics and the responses,
    in the group of the evaluated fine-tunes' experiment (`checkpoint_infos`: model key → see checkpoint_run);
    named `{architectures}-{dataset}-{size}-v{version}-instruct-eval`."""
    infos = checkpoint_infos or {}
    models = {
        key: {
            "checkpoint": {k: info.get(k) for k in ("path", "kind", "global_step", "best_val_loss", "parent")},
            "model": model_section(info.get("model_config") or {}, int(info.get("num_params") or 0)),
            "objective": info.get("objective_config"),
            "data_identity": info.get("data_identity"),
        }
        for key, info in infos.items()
    }
    first = next((info for key, info in infos.items() if key.endswith("/finetuned")), None)
    experiment = checkpoint_experiment(first or {"data_dir": results["data_dir"]})
    config = {
        "experiment": experiment.to_dict(),
        "dvc_experiment": dvc_experiment(),
        "git": git_revision(),
        "settings": results.get("settings"),
        "data_dir": results["data_dir"],
        "models": models,
    }
    archs = "+".join(sorted(results["models"])) or "none"
    name = run_name or experiment.run_name(archs, "-instruct-eval")
    tracker = WandbTracker(project, name, config, group=experiment.group, job_type="eval")
    try:
        tracker.log(flatten(results["models"], "instruct"), 0)
        columns = ["model", "family", "instruction", "input", "reference", "response", "eos", "exact_match"]
        tracker.log_table("instruct/responses", columns, response_rows(responses), 0)
    except Exception as e:
        print(f"warning: W&B logging failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
    finally:
        tracker.close()
