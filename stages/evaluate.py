"""Stage evaluate_{ar,diffusion,sdd}: the same metrics for any architecture's checkpoint.

    python stages/evaluate.py --checkpoint checkpoints/sdd/best.pt --data_dir data/corpus \\
        --metrics perplexity,accuracy,generation,speed --num_samples 100

The architecture comes from the checkpoint (`--architecture` only double-checks it). Writes the results JSON
(every metric with its kind, the settings and paths: metrics/eval_<arch>_results.json), its headline numbers for
`dvc metrics show` (metrics/eval_<arch>.json, lmcore.eval.report.HEADLINE), a readable samples file, and logs
`eval/...` to W&B. Every field of params.yaml `evaluate:` is a flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import add_dataclass_flags, run_stage
from lmcore.config import EvaluateConfig, apply_overrides, load_params
from lmcore.eval.report import headline_metrics, samples_text
from lmcore.eval.runner import evaluate
from lmcore.files import write_json, write_text
from lmcore.objectives import REGISTRY


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (or a folder: its latest.pt)")
    p.add_argument("--data_dir", default="data/corpus", help="prepared corpus with the checkpoint's tokenizer")
    p.add_argument("--architecture", choices=sorted(REGISTRY), help="optional; must agree with the checkpoint")
    p.add_argument("--output", help="results JSON (default: metrics/eval_<architecture>_results.json)")
    p.add_argument(
        "--metrics_file",
        help="headline numbers for DVC (default: metrics/eval_<architecture>.json; none when --output is given)",
    )
    p.add_argument(
        "--samples_file",
        help="readable samples (default: metrics/eval_<architecture>_samples.txt; <output without .json>_samples.txt)",
    )
    p.add_argument("--params", default="params.yaml")
    p.add_argument(
        "--wandb_run_name",
        help="default: the evaluated run's name + -eval, e.g. ar-stories-tiny-v1-eval (in that run's W&B group)",
    )
    names = add_dataclass_flags(p, EvaluateConfig, "evaluate")
    a = p.parse_args()
    cfg = apply_overrides(load_params(a.params).evaluate, {k: getattr(a, k) for k in names}, where="evaluate")
    ev = evaluate(a.checkpoint, a.data_dir, cfg, a.architecture, judge_required=a.judge is not None)
    arch = ev.results["architecture"]
    output = Path(a.output or f"metrics/eval_{arch}_results.json")
    stem = output.stem if a.output else f"eval_{arch}"
    samples_file = Path(a.samples_file or output.with_name(f"{stem}_samples.txt"))
    metrics_file = Path(a.metrics_file) if a.metrics_file else None if a.output else Path(f"metrics/eval_{arch}.json")
    write_text(samples_file, samples_text(ev.results, ev.samples))
    write_json(output, ev.results)
    if metrics_file:
        write_json(metrics_file, headline_metrics(ev.results))
    written = ", ".join(str(x) for x in (output, metrics_file, samples_file) if x)
    print(f"wrote {written} in {ev.results['timing']['total_s']:.1f}s")
    if cfg.wandb:
        from lmcore.eval.wandb_log import log_evaluation

        log_evaluation(ev.results, ev.samples, cfg.wandb_project, a.wandb_run_name, ev.checkpoint_info)


if __name__ == "__main__":
    run_stage(main)
