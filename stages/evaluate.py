"""Stage evaluate_{ar,diffusion,sdd}: the same metrics for any architecture's checkpoint.

    python stages/evaluate.py --checkpoint checkpoints/sdd/best.pt --data_dir data/corpus \\
        --metrics perplexity,accuracy,generation,speed --num_samples 100 --output metrics/eval_sdd.json

The architecture comes from the checkpoint (`--architecture` only double-checks it). Writes the results JSON
(each metric with its kind), a readable samples file beside it, and logs `eval/...` to W&B. Every field of
params.yaml `evaluate:` is a flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import add_dataclass_flags, run_stage
from lmcore.config import EvaluateConfig, apply_overrides, load_params
from lmcore.eval.report import samples_text
from lmcore.eval.runner import evaluate
from lmcore.files import write_json, write_text
from lmcore.objectives import REGISTRY


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (or a folder: its latest.pt)")
    p.add_argument("--data_dir", default="data/corpus", help="prepared corpus with the checkpoint's tokenizer")
    p.add_argument("--architecture", choices=sorted(REGISTRY), help="optional; must agree with the checkpoint")
    p.add_argument("--output", help="results JSON (default: metrics/eval_<architecture>.json)")
    p.add_argument("--samples_file", help="readable samples (default: <output without .json>_samples.txt)")
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
    output = Path(a.output or f"metrics/eval_{arch}.json")
    samples_file = Path(a.samples_file or output.with_name(f"{output.stem}_samples.txt"))
    write_text(samples_file, samples_text(ev.results, ev.samples))
    write_json(output, ev.results)
    print(f"wrote {output} and {samples_file} in {ev.results['timing']['total_s']:.1f}s")
    if cfg.wandb:
        from lmcore.eval.wandb_log import log_evaluation

        log_evaluation(ev.results, ev.samples, cfg.wandb_project, a.wandb_run_name, ev.checkpoint_info)


if __name__ == "__main__":
    run_stage(main)
