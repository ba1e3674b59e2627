"""Evaluation results to W&B: numbers under `eval/...` (`instruct/...` for instruction following), the samples or
responses as a table. Never fatal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from lmcore.eval.generation import Sample
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


def log_evaluation(results: dict[str, Any], samples: dict[str, list[Sample]], project: str, run_name: str) -> None:
    """One W&B run (online with credentials, offline otherwise) holding the metrics and a samples table."""
    numbers = {k: v for k, v in results.items() if k not in ("kind", "kind_notes", "timing")}
    config = {k: v for k, v in results.items() if isinstance(v, (str, int, float)) or k in ("kind", "judge")}
    tracker = WandbTracker(project, run_name, {"evaluation": config})
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
    results: dict[str, Any], responses: dict[str, list[Response]], project: str, run_name: str = "eval-instruct"
) -> None:
    """One W&B run (online with credentials, offline otherwise) with `instruct/...` metrics and the responses."""
    tracker = WandbTracker(project, run_name, {"settings": results.get("settings"), "data_dir": results["data_dir"]})
    try:
        tracker.log(flatten(results["models"], "instruct"), 0)
        columns = ["model", "family", "instruction", "input", "reference", "response", "eos", "exact_match"]
        tracker.log_table("instruct/responses", columns, response_rows(responses), 0)
    except Exception as e:
        print(f"warning: W&B logging failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
    finally:
        tracker.close()
