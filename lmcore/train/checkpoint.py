"""The one checkpoint module: the format, atomic save, validated load (with migration of older formats), the
compatibility checks of a resume, lineage, and rebuilding a model for evaluation or export.

Format (version 3; docs/architecture.md "Checkpoint format" lists every key): a dict with `global_step,
model_state_dict, model_config, optimizer_state_dict, scaler_state_dict (fp16 only), train_config, best_val_loss,
architecture`, what exact resume needs (`rng_state, data_position, objective_state, log_buffer,
tracker_run_id`), the data's identity (`tokenizer, data_dir, data_identity`), lineage (`kind` pretrain|finetune,
`parent`) and the settings changed on purpose at a resume (`changed_settings`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmcore.errors import CheckpointError, ConfigError
from lmcore.models import ModelConfig
from lmcore.objectives import REGISTRY, Objective, get_objective
from lmcore.train.device import amp_dtype, autocast, dtype_name, resolve_device
from lmcore.train.rundir import temp_path
from lmcore.train.tracking import flatten

FORMAT_VERSION = 3
KINDS = ("pretrain", "finetune")


# ---------------------------------------------------------------- lineage and what a run records
@dataclass
class RunInfo:
    """What a checkpoint records about its run besides the weights and the optimizer."""

    architecture: str
    tokenizer_identity: dict[str, Any]
    data_dir: str
    kind: str = "pretrain"  # pretrain | finetune
    parent: dict[str, Any] | None = None  # the checkpoint this run started from: path, global_step, ...
    extra: dict[str, Any] = field(default_factory=dict)  # more facts to store (e.g. the instruction data's)
    data_identity: dict[str, Any] | None = None  # what identifies the data's contents (sizes, checksums)
    # Settings changed on purpose at resumes (--allow_changed_settings): [{"at_step": n, "changes": {...}}, ...]
    changed_settings: list[dict[str, Any]] = field(default_factory=list)


def parent_record(path: str | Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """How a child run records the checkpoint it started from."""
    return {
        "path": str(path),
        "global_step": ckpt.get("global_step"),
        "best_val_loss": ckpt.get("best_val_loss"),
        "architecture": ckpt.get("architecture"),
        "kind": ckpt.get("kind"),
    }


def build_checkpoint(
    *,
    step: int,
    info: RunInfo,
    model_config: ModelConfig,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    scaler_state: dict[str, Any] | None,
    train_config: dict[str, Any],
    best_val_loss: float,
    objective: Objective,
    best_val_slots: int | None = None,
    log_buffer: dict[str, Any],
    tracker_run_id: str | None,
    compute: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a run at `step`, with this process's RNG states (see the module docstring)."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": info.kind,
        "parent": info.parent,
        "global_step": step,
        "architecture": info.architecture,
        "model_state_dict": model_state,
        "model_config": model_config.to_dict(),
        "optimizer_state_dict": optimizer_state,
        **({"scaler_state_dict": scaler_state} if scaler_state is not None else {}),
        "train_config": train_config,
        "best_val_loss": best_val_loss,
        # The objective's slots per position (SDD's k) best_val_loss was taken at: best.pt is the best of one stage.
        "best_val_slots": best_val_slots,
        "compute": compute or {"flops": 0.0, "seconds": 0.0},  # training FLOPs and seconds so far
        "objective_state": objective.state_dict(),
        "objective_config": dataclasses.asdict(objective.cfg),
        "rng_state": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        # Batches are a pure function of (seed, step), so the step *is* the data-sampler position.
        "data_position": {"seed": train_config.get("seed"), "next_step": step},
        "log_buffer": log_buffer,
        "tracker_run_id": tracker_run_id,
        "tokenizer": info.tokenizer_identity,
        "data_dir": info.data_dir,
        "data_identity": info.data_identity,
        "changed_settings": info.changed_settings,
        **info.extra,
    }


def restore_rng(ckpt: dict[str, Any]) -> None:
    """Put back the RNG states a checkpoint saved (torch, CUDA, numpy, Python)."""
    rng = ckpt["rng_state"]
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


# ---------------------------------------------------------------- files
def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)  # PID in the name: the next run removes it if this process is killed mid-write
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
    """Load, validate and migrate a checkpoint; a missing, truncated or foreign file gives one clear line."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({e.__class__.__name__}: {str(e).splitlines()[0]})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint (expected a dict, got {type(ckpt).__name__})")
    missing = [k for k in ("global_step", "model_state_dict", "model_config") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    return migrate(ckpt, str(path))


# ---------------------------------------------------------------- format migrations
def _from_v0(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no format_version) may lack `architecture`: the weights' parameter names tell it.

    SDD's denoiser and the backbone differ in their parameter names, and the backbone's `causal` flag separates
    AR from diffusion; the checkpoint is marked `architecture_inferred`."""
    if not ckpt.get("architecture"):
        cfg = ckpt.get("model_config", {})
        fits = [n for n in REGISTRY if _weights_fit(n, ckpt)]
        guess = "sdd" if ("k" in cfg or "max_k" in cfg) else ("ar" if cfg.get("causal", True) else "diffusion")
        ckpt["architecture"] = guess if not fits or guess in fits else fits[0]
        ckpt["architecture_inferred"] = True
    return {**ckpt, "format_version": 1}


def _from_v1(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept lineage as `parent_checkpoint` (a path) plus, for fine-tuning, `parent` (a record)."""
    parent_path = ckpt.pop("parent_checkpoint", None)
    parent = ckpt.get("parent") or ({"path": parent_path} if parent_path else None)
    return {**ckpt, "kind": "finetune" if parent else "pretrain", "parent": parent, "format_version": 2}


# Version 2 → 3 renamed knobs that meant two things (one name per concept) and SDD's extra accuracies.
_RENAMED_SETTINGS = {"diffusion": {"eps": "t_min"}, "sdd": {"eps": "candidate_prob", "num_steps": "sampling_steps"}}
_RENAMED_METRICS = {"all_acc": "all_accuracy", "ignore_acc": "ignore_accuracy"}


def _from_v2(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Version 2 called diffusion's time floor and SDD's candidate probability both `eps`, SDD's sampling steps
    `num_steps`, and SDD's extra training accuracies `all_acc`/`ignore_acc`."""
    renames = _RENAMED_SETTINGS.get(ckpt.get("architecture"), {})
    settings = {renames.get(k, k): v for k, v in (ckpt.get("objective_config") or {}).items()}
    buffer = {}
    for key, values in (ckpt.get("log_buffer") or {}).items():
        section, _, name = key.rpartition("/")
        buffer[f"{section}/{_RENAMED_METRICS.get(name, name)}" if section else key] = values
    return {**ckpt, "objective_config": settings, "log_buffer": buffer, "format_version": 3}


# version → the function that lifts a checkpoint of that version by one; add an entry when the format changes.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_v0, 1: _from_v1, 2: _from_v2}


def migrate(ckpt: dict[str, Any], where: str) -> dict[str, Any]:
    """Lift a checkpoint of an older format version to FORMAT_VERSION, one version at a time."""
    version = int(ckpt.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {version} is newer than this lmcore reads ({FORMAT_VERSION}); upgrade lmcore"
        )
    while version < FORMAT_VERSION:
        ckpt = MIGRATIONS[version](ckpt)
        version = ckpt["format_version"]
    if ckpt.get("kind", "pretrain") not in KINDS:
        raise CheckpointError(f"{where}: unknown kind {ckpt.get('kind')!r} (known: {', '.join(KINDS)})")
    return ckpt


def _weights_fit(name: str, ckpt: dict[str, Any]) -> bool:
    """Whether the checkpoint's weights have exactly the parameter names of `name`'s model (built on meta)."""
    try:
        objective = REGISTRY[name]()
        cfg = ModelConfig.from_dict({**ckpt["model_config"], "causal": objective.causal})
        with torch.device("meta"):
            keys = set(objective.build_model(cfg).state_dict())
    except Exception:
        return False
    return keys == set(ckpt["model_state_dict"])


# ---------------------------------------------------------------- compatibility
def check_tokenizer(ckpt: dict[str, Any], identity: dict[str, Any], where: str) -> None:
    """A checkpoint trained with one tokenizer must not be paired with data tokenised by another."""
    theirs = ckpt.get("tokenizer")
    if theirs and identity and theirs.get("sha256") != identity.get("sha256"):
        raise CheckpointError(
            f"{where}: tokenizer does not match the data's tokenizer.json "
            f"(checkpoint vocab {theirs.get('vocab_size')}, sha256 {str(theirs.get('sha256'))[:12]}; "
            f"data vocab {identity.get('vocab_size')}, sha256 {str(identity.get('sha256'))[:12]})"
        )


# Settings of `train:` that change what a resumed run computes (which rows each step trains on, their noise). Every
# field of the objective's section and the data's contents count too; see setting_changes.
COMPUTE_SETTINGS = ("seq_len", "batch_size", "grad_accum_steps", "seed")


def setting_changes(
    ckpt: dict[str, Any], info: RunInfo, train_config: dict[str, Any], objective_config: dict[str, Any]
) -> dict[str, list[Any]]:
    """{name: [the checkpoint's value, this run's]} for every computation-changing setting that differs.

    Names are params.yaml's (`train.seq_len`, `sdd.fixed_k`) or `data.<split>.<what>` for the data's contents.
    Settings a checkpoint does not record (older formats) are not compared."""
    theirs = {
        **{f"train.{k}": v for k, v in (ckpt.get("train_config") or {}).items() if k in COMPUTE_SETTINGS},
        **flatten(ckpt.get("objective_config") or {}, f"{ckpt.get('architecture')}.", "."),
        **flatten(ckpt.get("data_identity") or {}, "data.", "."),
    }
    ours = {
        **{f"train.{k}": v for k, v in train_config.items() if k in COMPUTE_SETTINGS},
        **flatten(objective_config, f"{info.architecture}.", "."),
        **flatten(info.data_identity or {}, "data.", "."),
    }
    return {k: [theirs[k], ours[k]] for k in theirs if k in ours and theirs[k] != ours[k]}


def _show(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text  # checksums: a prefix names them well enough


def check_resume(
    ckpt: dict[str, Any],
    info: RunInfo,
    model_config: ModelConfig,
    where: str,
    train_config: dict[str, Any] | None = None,
    objective_config: dict[str, Any] | None = None,
    allow_changed: bool = False,
) -> dict[str, list[Any]]:
    """A run may resume only a checkpoint of its own architecture, kind, model shape, tokenizer and parent, and
    (when `train_config` is given) with the settings it computed with, unless `allow_changed`.

    Returns the allowed setting changes (see setting_changes), which the run records with changes_record."""
    if ckpt.get("architecture") != info.architecture:
        raise CheckpointError(
            f"{where}: checkpoint architecture '{ckpt.get('architecture')}' "
            f"does not match --architecture {info.architecture}"
        )
    if ckpt.get("kind", "pretrain") != info.kind:
        hint = (
            "--resume_from takes a fine-tuning checkpoint (e.g. its latest.pt); a pretrained model goes to "
            "--pretrained_checkpoint"
            if info.kind == "finetune"
            else "resume it with stages/finetune.py"
        )
        raise CheckpointError(f"{where}: a {ckpt.get('kind')} checkpoint cannot resume a {info.kind} run ({hint})")
    check_tokenizer(ckpt, info.tokenizer_identity, where)
    theirs = (ckpt.get("parent") or {}).get("path")
    ours = (info.parent or {}).get("path")
    if info.kind == "finetune" and theirs not in (None, ours):
        raise CheckpointError(f"{where}: fine-tuned from {theirs}, not from --pretrained_checkpoint {ours}")
    # Settings before the model config: a changed seq_len is named as such, not as the max_seq_len it implies.
    changes = {} if train_config is None else setting_changes(ckpt, info, train_config, objective_config or {})
    if changes and not allow_changed:
        listed = ", ".join(f"{k} {_show(a)} → {_show(b)}" for k, (a, b) in changes.items())
        raise CheckpointError(
            f"{where}: this run changes settings the checkpoint was trained with: {listed}; "
            f"resume with the checkpoint's settings, or pass --allow_changed_settings to change "
            f"them on purpose (recorded in the checkpoint)"
        )
    # Gradient checkpointing changes memory, not the model, so it may differ across a resume.
    diff = sorted(
        k
        for k, v in model_config.to_dict().items()
        if k != "gradient_checkpointing" and ckpt["model_config"].get(k) != v
    )
    if diff:
        raise CheckpointError(f"{where}: model config differs from this run in {', '.join(diff)}")
    return changes


def changes_record(ckpt: dict[str, Any], changes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The resumed checkpoint's `changed_settings`, plus this resume's allowed changes if any."""
    earlier = list(ckpt.get("changed_settings") or [])
    return earlier + ([{"at_step": ckpt["global_step"], "changes": changes}] if changes else [])


def resolve_architecture(ckpt: dict[str, Any], requested: str | None, where: str) -> tuple[str, str]:
    """(architecture, "recorded"|"inferred"); a `requested` one that contradicts the checkpoint is an error."""
    arch = ckpt.get("architecture")
    if arch not in REGISTRY:
        raise CheckpointError(f"{where}: unknown architecture '{arch}' (known: {', '.join(REGISTRY)})")
    source = "inferred" if ckpt.get("architecture_inferred") else "recorded"
    if requested and requested != arch:
        how = "records" if source == "recorded" else "was inferred from its model config as"
        raise CheckpointError(
            f"{where}: --architecture {requested} contradicts the checkpoint, which {how} "
            f"architecture '{arch}' (drop the flag or pick the right checkpoint)"
        )
    return arch, source


# ---------------------------------------------------------------- rebuilding a model
# Checkpoint keys worth keeping once the weights are in the model (the optimizer state is dropped).
_INFO_KEYS = (
    "global_step",
    "best_val_loss",
    "train_config",
    "objective_config",
    "tokenizer",
    "data_dir",
    "tracker_run_id",
    "kind",
    "parent",
    "data_identity",
    "experiment",
)


@dataclass
class LoadedModel:
    """A checkpoint rebuilt into its objective and model, ready to evaluate, sample from or export."""

    path: Path
    architecture: str
    architecture_source: str  # "recorded" (the checkpoint's field) or "inferred" (from its weights, old files)
    objective: Objective
    model: nn.Module
    model_config: ModelConfig
    info: dict[str, Any]
    device: torch.device
    amp_dtype: torch.dtype | None

    def autocast(self) -> Any:
        """Autocast as in training (bf16 on CUDA by default), or nothing in fp32."""
        return autocast(self.device, self.amp_dtype)

    @property
    def dtype_name(self) -> str:
        """The compute dtype, as recorded next to speed numbers."""
        return dtype_name(self.amp_dtype)


def objective_from(ckpt: dict[str, Any], arch: str, where: str) -> Objective:
    """The objective with the settings and state (e.g. SDD's current k) the checkpoint was trained with."""
    try:
        objective = get_objective(arch, dict(ckpt.get("objective_config") or {}))
    except ConfigError as e:
        raise CheckpointError(f"{where}: incompatible objective settings ({e})") from None
    objective.load_state_dict(ckpt.get("objective_state") or {})
    return objective


def model_config_from(ckpt: dict[str, Any], where: str, **changes: Any) -> ModelConfig:
    """The checkpoint's (final) model config, with run-time-only `changes` such as gradient_checkpointing."""
    try:
        return ModelConfig.from_dict({**ckpt["model_config"], **changes}, where=f"{where}: model_config")
    except ConfigError as e:
        raise CheckpointError(f"{where}: incompatible checkpoint ({e})") from None


def load_model(
    path: str | Path, architecture: str | None = None, device: str = "auto", dtype: str = "auto"
) -> LoadedModel:
    """Rebuild any checkpoint's model for evaluation, sampling or export; the architecture comes from the file."""
    where = str(path)
    ckpt = load_checkpoint(path, map_location="cpu")
    arch, source = resolve_architecture(ckpt, architecture, where)
    objective = objective_from(ckpt, arch, where)
    model_cfg = model_config_from(ckpt, where, gradient_checkpointing=False)
    model = objective.build_model(model_cfg)
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit a {arch} model ({str(e).splitlines()[0]})") from None
    dev = resolve_device(device)
    model.to(dev).eval()
    info = {k: ckpt.get(k) for k in _INFO_KEYS}
    return LoadedModel(Path(path), arch, source, objective, model, model_cfg, info, dev, amp_dtype(dtype, dev))


def check_data(loaded: LoadedModel, meta: dict[str, Any], data_dir: str | Path) -> None:
    """The prepared data must be tokenised with the checkpoint's tokenizer."""
    check_tokenizer(
        {"tokenizer": loaded.info.get("tokenizer")},
        meta.get("tokenizer_identity") or {},
        f"{loaded.path} with {data_dir}",
    )


def tokenizer_for(loaded: LoadedModel, tokenizer_path: str | Path | None = None):
    """The checkpoint's tokenizer: `tokenizer_path` (a file or data folder) or the data_dir it was trained on."""
    from lmcore.tokenizer import load_tokenizer, tokenizer_identity

    where = tokenizer_path or loaded.info.get("data_dir")
    if not where:
        raise CheckpointError(f"{loaded.path}: records no data_dir; pass --tokenizer (a tokenizer.json or data folder)")
    tok = load_tokenizer(where)
    check_tokenizer({"tokenizer": loaded.info.get("tokenizer")}, tokenizer_identity(tok), f"{loaded.path} with {where}")
    return tok
