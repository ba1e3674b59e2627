"""Objectives behind one interface, and the registry that maps architecture names to them.

This registry is the one place that knows which architectures exist; nothing else branches on the name.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from lmcore.errors import ConfigError
from lmcore.objectives.base import Batch, Objective

# Architecture name → (module, class). Modules are imported on first use, so a stage that trains one
# architecture imports (and, in dvc.yaml, depends on) that architecture's objective only.
_CLASSES = {
    "ar": ("lmcore.objectives.ar", "ARObjective"),
    "diffusion": ("lmcore.objectives.diffusion", "DiffusionObjective"),
    "sdd": ("lmcore.objectives.sdd", "SDDObjective"),
}


class _Registry(Mapping[str, type[Objective]]):
    """name → Objective class, importing each architecture's module when it is first looked up."""

    def __getitem__(self, name: str) -> type[Objective]:
        module, cls = _CLASSES[name]
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


REGISTRY: Mapping[str, type[Objective]] = _Registry()


def get_objective(name: str, section: dict[str, Any] | None = None) -> Objective:
    """Instantiate the objective for architecture `name` with its params.yaml section."""
    if name not in REGISTRY:
        raise ConfigError(f"architecture: unknown '{name}' (known: {', '.join(REGISTRY)})")
    return REGISTRY[name](section)


__all__ = ["REGISTRY", "Batch", "Objective", "get_objective"]
