"""Stage finetune_{ar,diffusion,sdd}: instruction fine-tuning of a pretrained checkpoint with the one trainer.

    python stages/finetune.py --pretrained_checkpoint checkpoints/sdd/best.pt --data_dir data_instruct \\
        --learning_rate 2e-5 --max_steps 3000 --eval_every 500 --warmup_steps 100 --wandb_project diffusion-lm-finetune
    python stages/finetune.py --pretrained_checkpoint checkpoints/ar/best.pt \\
        --resume_from checkpoints/ar_instruct/latest.pt

The loss is on response tokens only (AR: masked cross-entropy; diffusion: only response tokens are masked and
the NELBO is per response token; SDD: only response positions are noised and scored). The architecture comes
from the checkpoint (--architecture only double-checks it). Settings: params.yaml `train:`, with the values of
`finetune:` (everything where fine-tuning differs) on top, then these flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmcore.cli import add_dataclass_flags, run_stage, steps_flags
from lmcore.config import TrainConfig, apply_overrides, load_params
from lmcore.objectives import REGISTRY
from lmcore.train import distributed
from lmcore.train.run import Outputs, finetune


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained_checkpoint", required=True, help="checkpoint of any architecture")
    p.add_argument("--data_dir", default="data_instruct", help="prepared instruction data (prep_instruct)")
    p.add_argument("--architecture", choices=sorted(REGISTRY), help="optional; must agree with the checkpoint")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--checkpoint_dir", help="default: checkpoints/<architecture>_instruct")
    p.add_argument("--resume_from", help="fine-tuning checkpoint to continue from (e.g. its latest.pt)")
    p.add_argument(
        "--allow_changed_settings",
        action="store_true",
        help="resume even though seq_len, batch_size, grad_accum_steps, seed, the objective's settings or "
        "the data differ from the checkpoint's (the change is recorded in the checkpoint)",
    )
    p.add_argument(
        "--metrics_file",
        help="DVC metrics JSON, numbers only; the run facts go beside it in <name>_facts.json "
        "(default: metrics/finetune_<architecture>.json)",
    )
    p.add_argument("--plots_dir", help="DVCLive folder (default: plots/finetune_<architecture>)")
    flags = add_dataclass_flags(
        p, TrainConfig, "finetune", skip=("seq_len", "version"), source="`finetune:`, else `train:`"
    )
    a = p.parse_args()
    cfg = apply_overrides(
        load_params(a.params).finetune, steps_flags({k: getattr(a, k) for k in flags}), where="finetune"
    )

    def outputs(arch: str) -> Outputs:
        return Outputs(
            Path(a.checkpoint_dir or f"checkpoints/{arch}_instruct"),
            Path(a.metrics_file or f"metrics/finetune_{arch}.json"),
            Path(a.plots_dir or f"plots/finetune_{arch}"),
        )

    try:
        finetune(
            a.pretrained_checkpoint,
            a.data_dir,
            cfg,
            outputs,
            architecture=a.architecture,
            resume_from=a.resume_from,
            allow_changed_settings=a.allow_changed_settings,
        )
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run_stage(main)
