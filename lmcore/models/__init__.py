"""The one transformer backbone and its size presets."""

from lmcore.models.presets import PRESETS, ModelConfig, resolve_model_config
from lmcore.models.transformer import KVCache, Transformer

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "resolve_model_config"]
