"""One checkpoint format for every architecture and trainer; atomic writes; clear errors on bad files."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lmcore.errors import CheckpointError

REQUIRED_KEYS = ("global_step", "model_state_dict", "model_config", "optimizer_state_dict", "train_config",
                 "best_val_loss", "architecture")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; a missing, truncated or foreign file gives one clear line."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {str(e).splitlines()[0]})") \
            from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint (expected a dict, got {type(ckpt).__name__})")
    missing = [k for k in ("global_step", "model_state_dict", "model_config") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    return ckpt


def infer_architecture(ckpt: dict[str, Any]) -> str:
    """The checkpoint's architecture field, or a guess from its model config for checkpoints without one."""
    if ckpt.get("architecture"):
        return ckpt["architecture"]
    cfg = ckpt.get("model_config", {})
    if "k" in cfg or "max_k" in cfg:
        return "sdd"
    return "ar" if cfg.get("causal", True) else "diffusion"
