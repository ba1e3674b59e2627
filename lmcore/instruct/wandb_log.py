"""Instruction-evaluation results to W&B (project diffusion-lm-finetune): numbers and a responses table. Never fatal."""
from __future__ import annotations

import sys
from typing import Any

from lmcore.eval.wandb_log import flatten
from lmcore.instruct.evaluate import Response
from lmcore.train.tracking import WandbTracker


def log_results(results: dict[str, Any], responses: dict[str, list[Response]], project: str,
                run_name: str = "eval-instruct") -> None:
    """One W&B run (online with credentials, offline otherwise) with `instruct/...` metrics and the responses."""
    tracker = WandbTracker(project, run_name, {"settings": results.get("settings"), "data_dir": results["data_dir"]})
    try:
        tracker.log(flatten(results["models"], "instruct"), 0)
        if tracker.run is not None:
            rows = [[name, r.example.get("family"), r.example["instruction"], r.example.get("input", ""),
                     r.example["output"], r.text, r.ended, r.scores.get("exact_match")]
                    for name, items in responses.items() for r in items]
            cols = ["model", "family", "instruction", "input", "reference", "response", "eos", "exact_match"]
            tracker.run.log({"instruct/responses": tracker._wandb.Table(columns=cols, data=rows)}, step=0)
    except Exception as e:  # noqa: BLE001 - tracking never stops an evaluation
        print(f"warning: W&B logging failed, continuing without it ({e.__class__.__name__}: {e})", file=sys.stderr)
    finally:
        tracker.close()
