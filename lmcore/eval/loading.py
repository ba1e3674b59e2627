"""Checkpoints for evaluation: which architecture they hold, the model and objective ready to run, the tokenizer."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from lmcore.errors import CheckpointError, ConfigError
from lmcore.models import ModelConfig
from lmcore.objectives import REGISTRY, Objective, get_objective
from lmcore.tokenizer import load_tokenizer, tokenizer_identity
from lmcore.train.checkpoint import infer_architecture, load_checkpoint
from lmcore.train.trainer import check_tokenizer, resolve_device

# Checkpoint keys worth keeping once the weights are in the model (the optimizer state is dropped).
_INFO_KEYS = ("global_step", "best_val_loss", "train_config", "objective_config", "tokenizer", "data_dir",
              "tracker_run_id", "parent_checkpoint")


@dataclass
class LoadedModel:
    """A checkpoint ready to evaluate or sample from."""

    path: Path
    architecture: str
    architecture_source: str  # "recorded" (the checkpoint's field) or "inferred" (from its model config)
    objective: Objective
    model: nn.Module
    model_config: ModelConfig
    info: dict[str, Any]
    device: torch.device
    amp_dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast as in training (bf16 on CUDA by default), or nothing in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def dtype_name(self) -> str:
        """The compute dtype, as recorded next to speed numbers."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


@contextlib.contextmanager
def _meta_device() -> Iterator[None]:
    with torch.device("meta"):
        yield


def _weights_fit(name: str, ckpt: dict[str, Any]) -> bool:
    """Whether the checkpoint's weights have exactly the parameter names of `name`'s model (built on meta)."""
    try:
        cfg = ModelConfig.from_dict(dict(ckpt["model_config"]))
        with _meta_device():
            keys = set(REGISTRY[name]().build_model(cfg).state_dict())
    except Exception:  # noqa: BLE001 - a model that cannot even be built does not fit
        return False
    return keys == set(ckpt["model_state_dict"])


def resolve_architecture(ckpt: dict[str, Any], requested: str | None, where: str) -> tuple[str, str]:
    """(architecture, "recorded"|"inferred"); a `requested` one that contradicts the checkpoint is an error."""
    recorded = ckpt.get("architecture")
    if recorded:
        if recorded not in REGISTRY:
            raise CheckpointError(f"{where}: unknown architecture '{recorded}' (known: {', '.join(REGISTRY)})")
        arch, source = recorded, "recorded"
    else:
        # Old checkpoints: the model config's keys tell; SDD's denoiser and the backbone differ in their
        # parameter names, which settles what the config alone cannot.
        arch, source = infer_architecture(ckpt), "inferred"
        fits = [n for n in REGISTRY if _weights_fit(n, ckpt)]
        if fits and arch not in fits:
            arch = fits[0]
    if requested and requested != arch:
        how = "records" if source == "recorded" else "was inferred from its model config as"
        raise CheckpointError(f"{where}: --architecture {requested} contradicts the checkpoint, which {how} "
                              f"architecture '{arch}' (drop the flag or pick the right checkpoint)")
    return arch, source


def amp_dtype_for(dtype: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 autocast on CUDA, fp32 on CPU (as the trainer does); or the named dtype."""
    if dtype == "fp32" or (dtype == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if dtype == "fp16" else torch.bfloat16


def load_model(path: str | Path, architecture: str | None = None, device: str = "auto", dtype: str = "auto"
               ) -> LoadedModel:
    """Load a checkpoint of any architecture for evaluation; the architecture comes from the checkpoint."""
    where = str(path)
    ckpt = load_checkpoint(path, map_location="cpu")
    arch, source = resolve_architecture(ckpt, architecture, where)
    try:
        objective = get_objective(arch, ckpt.get("objective_config") or {})
        model_cfg = ModelConfig.from_dict(dict(ckpt["model_config"]), where=f"{where}: model_config")
    except ConfigError as e:
        raise CheckpointError(f"{where}: incompatible checkpoint ({e})") from None
    model_cfg.gradient_checkpointing = False
    objective.load_state_dict(ckpt.get("objective_state") or {})
    model = objective.build_model(model_cfg)
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit a {arch} model ({str(e).splitlines()[0]})") from None
    dev = resolve_device(device)
    model.to(dev).eval()
    info = {k: ckpt.get(k) for k in _INFO_KEYS}
    return LoadedModel(Path(path), arch, source, objective, model, model_cfg, info, dev, amp_dtype_for(dtype, dev))


def check_data(loaded: LoadedModel, meta: dict[str, Any], data_dir: str | Path) -> None:
    """The prepared data must be tokenised with the checkpoint's tokenizer."""
    check_tokenizer({"tokenizer": loaded.info.get("tokenizer")}, meta.get("tokenizer_identity") or {},
                    f"{loaded.path} with {data_dir}")


def tokenizer_for(loaded: LoadedModel, tokenizer_path: str | Path | None = None):  # noqa: ANN201 - tokenizers.Tokenizer
    """The checkpoint's tokenizer: `tokenizer_path` (a file or data folder) or the data_dir it was trained on."""
    where = tokenizer_path or loaded.info.get("data_dir")
    if not where:
        raise CheckpointError(f"{loaded.path}: records no data_dir; pass --tokenizer (a tokenizer.json or data folder)")
    tok = load_tokenizer(where)
    check_tokenizer({"tokenizer": loaded.info.get("tokenizer")}, tokenizer_identity(tok), f"{loaded.path} with {where}")
    return tok
