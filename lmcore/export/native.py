"""The weights-only export of models no transformers class runs (diffusion, SDD), and loading it back into lmcore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

import lmcore
from lmcore.errors import CheckpointError, ConfigError, DataError
from lmcore.export.weights import native_state_dict
from lmcore.files import read_json_object
from lmcore.models import ModelConfig
from lmcore.objectives import Objective, get_objective
from lmcore.train.checkpoint import LoadedModel

# `format` of config.json: deliberately no `model_type`/`architectures`, so no transformers Auto class claims it.
NATIVE_FORMAT = "lmcore-weights"
WEIGHTS_FILE = "model.safetensors"


def native_config(loaded: LoadedModel) -> dict[str, Any]:
    """config.json of a weights-only export: what lmcore needs to rebuild the model and its sampler."""
    return {
        "format": NATIVE_FORMAT,
        "note": "lmcore weights, not a transformers model: load with lmcore.export.load_native(folder)",
        "lmcore_version": lmcore.__version__,
        "architecture": loaded.architecture,
        "metric_kind": loaded.objective.metric_kind,
        "model_config": loaded.model_config.to_dict(),
        "objective_config": loaded.info.get("objective_config") or {},
        "objective_state": loaded.objective.state_dict(),
        "weights": WEIGHTS_FILE,
        # safetensors stores a tensor once: a tied head is embed.weight again.
        "tied_weights": {"head.weight": "embed.weight"} if loaded.model_config.tie_embeddings else {},
        "tokenizer_identity": loaded.info.get("tokenizer"),
        "global_step": loaded.info.get("global_step"),
    }


def write_native(loaded: LoadedModel, folder: Path) -> None:
    """model.safetensors under lmcore's own weight names, and config.json (native_config)."""
    from safetensors.torch import save_file

    save_file(
        native_state_dict(loaded.model.state_dict(), loaded.model_config),
        str(folder / WEIGHTS_FILE),
        metadata={"format": "pt"},
    )
    (folder / "config.json").write_text(json.dumps(native_config(loaded), indent=2) + "\n")


def load_native(folder: str | Path) -> tuple[Objective, nn.Module]:
    """The objective (for `sample`, `eval_stats`) and the model in eval mode, from a weights-only export."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        cfg = read_json_object(folder / "config.json", f"{folder}: no config.json (not an export folder)", "config")
    except DataError as e:
        raise CheckpointError(str(e)) from None
    if cfg.get("format") != NATIVE_FORMAT:
        raise CheckpointError(
            f"{folder}/config.json: format {cfg.get('format')!r} is not {NATIVE_FORMAT!r} "
            "(a transformers model loads with AutoModelForCausalLM)"
        )
    try:
        objective = get_objective(cfg["architecture"], cfg["objective_config"])
        model_cfg = ModelConfig.from_dict(cfg["model_config"], where=f"{folder}/config.json: model_config")
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{folder}/config.json: incompatible export ({e})") from None
    objective.load_state_dict(cfg.get("objective_state") or {})
    model = objective.build_model(model_cfg)
    path = folder / cfg.get("weights", WEIGHTS_FILE)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    weights = load_file(str(path))
    for alias, source in (cfg.get("tied_weights") or {}).items():
        weights[alias] = weights[source]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{folder}: weights do not fit the config ({str(e).splitlines()[0]})") from None
    return objective, model.eval()
