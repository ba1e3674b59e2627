"""Evaluation results to W&B: numbers under `eval/...`, the samples as a table. Never fatal."""
from __future__ import annotations

import sys
from typing import Any

from lmcore.eval.generation import Sample
from lmcore.train.tracking import WandbTracker


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
            prompt = s.text[:len(s.text) - len(s.continuation)] if s.prompt_ids else ""
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
        if tracker.run is not None:
            table = tracker._wandb.Table(columns=["section", "prompt", "text", "eos", "valid"],
                                         data=sample_rows(samples))
            tracker.run.log({"eval/samples": table}, step=step)
    except Exception as e:  # noqa: BLE001 - tracking never stops an evaluation
        print(f"warning: W&B logging failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
    finally:
        tracker.close()
