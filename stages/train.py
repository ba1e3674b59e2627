"""Stage train_{ar,diffusion,sdd}: pretrain one architecture on a prepared corpus with the one trainer.

Hyperparameters come from params.yaml (`train:` with the architecture's own `train:` values on top, `model:`
and the architecture's own section); every field of those sections is also a flag for manual runs, e.g.
    python stages/train.py --architecture ar --model_config small --max_steps 2000 --no_wandb
    python stages/train.py --architecture sdd --fixed_k 4 --stop_at_step 100
`python stages/train.py --architecture sdd --help` lists that architecture's own flags.

Several GPUs (or CPU processes) train data-parallel under torchrun; --batch_size is per process:
    torchrun --standalone --nproc_per_node 8 stages/train.py --architecture ar --model_config xl
    torchrun --standalone --nproc_per_node 8 stages/train.py --architecture sdd --parallel fsdp
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lmcore.cli import add_dataclass_flags, run_stage, steps_flags
from lmcore.config import TrainConfig, apply_overrides, load_params
from lmcore.models import resolve_model_config
from lmcore.objectives import REGISTRY, get_objective
from lmcore.train import distributed
from lmcore.train.experiment import new_experiment
from lmcore.train.run import Outputs, pretrain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--architecture", required=True, choices=sorted(REGISTRY))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data_dir", default="data/corpus", help="prepared corpus (meta.json, train.bin, val.bin)")
    p.add_argument("--model_config", help="size preset (tiny|small|medium|large|xl) or a .yaml/.json file")
    p.add_argument("--checkpoint_dir", help="default: checkpoints/<architecture>")
    p.add_argument("--resume_from", help="checkpoint to continue from (e.g. checkpoints/ar/latest.pt)")
    p.add_argument(
        "--allow_changed_settings",
        action="store_true",
        help="resume even though seq_len, batch_size, grad_accum_steps, seed, the objective's settings or "
        "the data differ from the checkpoint's (the change is recorded in the checkpoint)",
    )
    p.add_argument(
        "--metrics_file",
        help="DVC metrics JSON, numbers only; the run facts go beside it in <name>_facts.json "
        "(default: metrics/train_<architecture>.json)",
    )
    p.add_argument("--plots_dir", help="DVCLive folder (default: plots/train_<architecture>)")
    train_flags = add_dataclass_flags(p, TrainConfig, "train", skip=("version",))
    # The chosen architecture's own section becomes flags too (its fields are only known once it is named).
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--architecture", choices=sorted(REGISTRY))
    chosen = pre.parse_known_args()[0].architecture
    objective_flags = add_dataclass_flags(p, REGISTRY[chosen].Config, chosen) if chosen else []
    a = p.parse_args()
    arch = a.architecture

    params = load_params(a.params)
    cfg = apply_overrides(params.train_for(arch), steps_flags({k: getattr(a, k) for k in train_flags}), where="train")
    section = apply_overrides(params.objective(arch), {k: getattr(a, k) for k in objective_flags}, where=arch)
    objective = get_objective(arch, dataclasses.asdict(section))
    size = a.model_config or params.model
    model_cfg = resolve_model_config(size)
    dataset = params.data if a.data_dir == "data/corpus" else Path(a.data_dir).name
    # The W&B group: the DVC experiment under `dvc exp run`, else {dataset}-{size}-v{version}.
    experiment = new_experiment(dataset, Path(size).stem, cfg.version)
    run_name = cfg.wandb_run_name or experiment.run_name(arch)
    outputs = Outputs(
        checkpoint_dir=Path(a.checkpoint_dir or f"checkpoints/{arch}"),
        metrics_file=Path(a.metrics_file or f"metrics/train_{arch}.json"),
        plots_dir=Path(a.plots_dir or f"plots/train_{arch}"),
    )
    try:
        pretrain(
            objective,
            model_cfg,
            cfg,
            Path(a.data_dir),
            outputs,
            run_name,
            a.resume_from,
            allow_changed_settings=a.allow_changed_settings,
            experiment=experiment,
        )
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run_stage(main)
