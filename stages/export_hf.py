"""Export a checkpoint as a Hugging Face folder.

    python stages/export_hf.py --checkpoint checkpoints/ar/best.pt --output_dir exports/ar-hf

AR checkpoints load with transformers' AutoModelForCausalLM / AutoTokenizer; diffusion and SDD checkpoints are
exported as weights (safetensors) + lmcore's config.json, loaded back with lmcore.export.load_native. Every folder
has the tokenizer and a model card (README.md). Needs the `hf` extra: pip install -e ".[hf]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmcore.cli import run_stage
from lmcore.export import export_checkpoint
from lmcore.export.huggingface import TRANSFORMERS_CLASS, runs_in_transformers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pt checkpoint (or its folder: latest.pt)")
    p.add_argument("--output_dir", required=True, help="the export folder (written atomically)")
    p.add_argument("--tokenizer", help="tokenizer.json or data folder (default: the checkpoint's data_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    a = p.parse_args()
    loaded = export_checkpoint(a.checkpoint, a.output_dir, a.tokenizer, a.overwrite)
    how = TRANSFORMERS_CLASS if runs_in_transformers(loaded) else "lmcore weights (load with lmcore.export.load_native)"
    print(f"{loaded.path} ({loaded.architecture}, step {loaded.info.get('global_step')}) → {a.output_dir}: {how}")


if __name__ == "__main__":
    run_stage(main)
