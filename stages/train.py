"""Stage train_{ar,diffusion,sdd}: pretrain one architecture on a prepared corpus with the one trainer.

Hyperparameters come from params.yaml (`train:`, `model:` and the architecture's own section); flags override
them for manual runs, e.g.
    python stages/train.py --architecture ar --model_config small --max_steps 2000 --no_wandb
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmcore.cli import bool_flag, run_stage  # noqa: E402
from lmcore.config import apply_overrides, load_params  # noqa: E402
from lmcore.models import resolve_model_config  # noqa: E402
from lmcore.objectives import REGISTRY, get_objective  # noqa: E402
from lmcore.train.run import Outputs, pretrain  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--architecture", required=True, choices=sorted(REGISTRY))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data_dir", default="data/corpus", help="prepared corpus (meta.json, train.bin, val.bin)")
    p.add_argument("--model_config", help="size preset (tiny|small|medium|large|xl) or a .yaml/.json file")
    p.add_argument("--checkpoint_dir", help="default: checkpoints/<architecture>")
    p.add_argument("--resume_from", help="checkpoint to continue from (e.g. checkpoints/ar/latest.pt)")
    p.add_argument("--metrics_file", help="DVC metrics JSON (default: metrics/train_<architecture>.json)")
    p.add_argument("--plots_dir", help="DVCLive folder (default: plots/train_<architecture>)")
    for name, typ in [("max_steps", int), ("stop_at_step", int), ("batch_size", int), ("seq_len", int), ("learning_rate", float),
                      ("warmup_steps", int), ("grad_accum_steps", int), ("eval_every", int),
                      ("checkpoint_every", int), ("log_every", int), ("seed", int), ("device", str),
                      ("dtype", str), ("wandb_project", str), ("wandb_run_name", str)]:
        p.add_argument(f"--{name}", type=typ)
    bool_flag(p, "wandb", "log to Weights & Biases (online with credentials, offline otherwise)")
    bool_flag(p, "gradient_checkpointing", "recompute activations in the backward pass to save memory")
    bool_flag(p, "compile", "torch.compile the model")
    a = p.parse_args()

    params = load_params(a.params)
    overrides = {k: getattr(a, k) for k in (
        "max_steps", "stop_at_step", "batch_size", "seq_len", "learning_rate", "warmup_steps", "grad_accum_steps", "eval_every",
        "checkpoint_every", "log_every", "seed", "device", "dtype", "wandb_project", "wandb_run_name", "wandb",
        "gradient_checkpointing", "compile")}
    cfg = apply_overrides(params.train, overrides, where="train")
    size = a.model_config or params.model
    model_cfg = resolve_model_config(size)
    objective = get_objective(a.architecture, params.objectives.get(a.architecture))
    dataset = params.data if a.data_dir == "data/corpus" else Path(a.data_dir).name
    run_name = cfg.wandb_run_name or f"{a.architecture}-{dataset}-{Path(size).stem}-v{cfg.version}"
    arch = a.architecture
    outputs = Outputs(
        checkpoint_dir=Path(a.checkpoint_dir or f"checkpoints/{arch}"),
        metrics_file=Path(a.metrics_file or f"metrics/train_{arch}.json"),
        plots_dir=Path(a.plots_dir or f"plots/train_{arch}"),
    )
    pretrain(objective, model_cfg, cfg, Path(a.data_dir), outputs, run_name, a.resume_from)


if __name__ == "__main__":
    run_stage(main)
