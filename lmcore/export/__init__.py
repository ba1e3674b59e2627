"""Export checkpoints for the Hugging Face ecosystem: transformers models (AR) and weights-only folders (others)."""

from lmcore.export.huggingface import export_checkpoint
from lmcore.export.native import load_native

__all__ = ["export_checkpoint", "load_native"]
