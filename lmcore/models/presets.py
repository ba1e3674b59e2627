"""Model configuration and the size presets every architecture shares."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmcore.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the one transformer backbone. Frozen: a run builds its final config once with `finalize`
    (preset + the corpus' vocabulary + the objective's rows and attention direction) and the checkpoint stores
    that same object."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    vocab_size: int = 2048
    max_seq_len: int = 1024
    causal: bool = True
    dropout: float = 0.0
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"model: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"model: head dimension {self.d_model // self.n_heads} must be even for rotary positions")
        for name in ("d_model", "n_heads", "n_layers", "d_ff", "vocab_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model: {name} must be positive, got {getattr(self, name)}")

    def finalize(self, *, vocab_size: int, context: int, causal: bool, gradient_checkpointing: bool) -> ModelConfig:
        """The final config of a run: this preset with the corpus' vocabulary, room for rows of `context` tokens,
        the objective's attention direction and the run's gradient-checkpointing setting."""
        return dataclasses.replace(
            self,
            vocab_size=vocab_size,
            max_seq_len=max(self.max_seq_len, context),
            causal=causal,
            gradient_checkpointing=gradient_checkpointing,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as stored in checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model config") -> ModelConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


# The reference table (d_model / heads / layers / d_ff). `tiny` is for CPU tests and the offline default
# pipeline. Parameter counts with a 32k vocabulary and tied embeddings: small ~23M, xl ~335M (302M non-embedding).
# `nano`, `micro` and `mini` are the small end of the scaling grid (pipelines/scaling): with the built-in corpus'
# ~1.1k vocabulary nano ~59k parameters (25k non-embedding), micro ~0.17M (98k), mini ~0.44M (0.33M),
# tiny ~0.93M (0.79M); with a 2k vocabulary nano is ~0.09M.
PRESETS: dict[str, dict[str, int]] = {
    "nano": dict(d_model=32, n_heads=2, n_layers=2, d_ff=128),
    "micro": dict(d_model=64, n_heads=2, n_layers=2, d_ff=256),
    "mini": dict(d_model=96, n_heads=4, n_layers=3, d_ff=384),
    "tiny": dict(d_model=128, n_heads=4, n_layers=4, d_ff=512),
    "small": dict(d_model=384, n_heads=6, n_layers=6, d_ff=1536),
    "medium": dict(d_model=512, n_heads=8, n_layers=8, d_ff=2048),
    "large": dict(d_model=768, n_heads=12, n_layers=12, d_ff=3072),
    "xl": dict(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
}


def resolve_model_config(name_or_path: str, **overrides: Any) -> ModelConfig:
    """A preset name (`tiny|small|medium|large|xl`) or a YAML/JSON file of ModelConfig fields, plus overrides."""
    if name_or_path in PRESETS:
        base: dict[str, Any] = dict(PRESETS[name_or_path])
    else:
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            raise ConfigError(
                f"model: unknown size '{name_or_path}' (presets: {', '.join(PRESETS)}; or a path to a .yaml/.json file)"
            )
        try:
            text = path.read_text()
            base = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read model config ({e.__class__.__name__}: {e})") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: model config must be a mapping of ModelConfig fields")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig.from_dict(base, where=f"model '{name_or_path}'")
