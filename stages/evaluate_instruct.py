"""Stage evaluate_instruct: fine-tuned checkpoints beside their pretrained parents on held-out test prompts.

    python stages/evaluate_instruct.py --data_dir data_instruct \\
        --checkpoints checkpoints/ar_instruct/best.pt checkpoints/diffusion_instruct/best.pt \\
        --plots_dir plots/evaluate_instruct

Writes the results JSON (metrics/evaluate_instruct_results.json), its headline numbers for `dvc metrics show`
(metrics/evaluate_instruct_<arch>.json: the overall exact match of the pretrained and the fine-tuned model), the
responses and the exact-match chart data (plots/evaluate_instruct/exact_match.csv). Each checkpoint's parent is
the `parent_checkpoint` it records (or --pretrained, in the same order). Reports ROUGE-L and BLEU against the
references, format compliance, and exact match per built-in task family.
Every field of params.yaml `evaluate_instruct:` is a flag.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmcore.cli import add_dataclass_flags, run_stage
from lmcore.config import EvaluateInstructConfig, apply_overrides, load_params
from lmcore.eval.instruct import compare
from lmcore.eval.instruct_report import write_outputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True, help="fine-tuned checkpoints (any architectures)")
    p.add_argument("--pretrained", nargs="*", help="their pretrained parents (default: as each one records)")
    p.add_argument("--data_dir", default="data_instruct")
    p.add_argument("--output", help="results JSON (default: metrics/evaluate_instruct_results.json)")
    p.add_argument(
        "--metrics_dir",
        help="headline numbers for DVC, evaluate_instruct_<arch>.json each (default: metrics; none with --output)",
    )
    p.add_argument(
        "--responses_file",
        help="default: metrics/evaluate_instruct_responses.txt; with --output: <output without .json>_responses.txt",
    )
    p.add_argument("--plots_dir", help="exact_match.csv/.png (default: plots/evaluate_instruct)")
    p.add_argument("--params", default="params.yaml")
    names = add_dataclass_flags(p, EvaluateInstructConfig, "evaluate_instruct")
    a = p.parse_args()
    cfg = apply_overrides(
        load_params(a.params).evaluate_instruct, {k: getattr(a, k) for k in names}, where="evaluate_instruct"
    )
    start = time.perf_counter()
    infos: dict = {}
    models, responses = compare(a.checkpoints, a.data_dir, cfg, a.pretrained, infos)
    results = {
        "data_dir": a.data_dir,
        "settings": {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "steps": cfg.steps or "checkpoint default",
            "seed": cfg.seed,
        },
        "models": models,
        "seconds": round(time.perf_counter() - start, 1),
    }
    output = Path(a.output or "metrics/evaluate_instruct_results.json")
    stem = output.stem if a.output else "evaluate_instruct"
    default_metrics = None if a.output else Path("metrics")  # no writes beside a given --output
    metrics_dir = Path(a.metrics_dir) if a.metrics_dir else default_metrics
    written = write_outputs(
        results,
        responses,
        output,
        Path(a.responses_file or output.with_name(f"{stem}_responses.txt")),
        Path(a.plots_dir or "plots/evaluate_instruct"),
        metrics_dir,
    )
    for arch, entry in models.items():
        row = {m: entry[m].get("exact_match", {}).get("overall") for m in ("pretrained", "finetuned") if m in entry}
        rouge = {m: round(entry[m]["rouge_l"], 3) for m in ("pretrained", "finetuned") if m in entry}
        print(f"{arch}: exact match {row}, ROUGE-L {rouge}")
    print("wrote " + ", ".join(map(str, written)))
    if cfg.wandb:
        from lmcore.eval.wandb_log import log_instruct_results

        log_instruct_results(results, responses, cfg.wandb_project, checkpoint_infos=infos)


if __name__ == "__main__":
    run_stage(main)
