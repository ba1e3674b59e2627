"""Objectives behind one interface, and the registry that maps architecture names to them.

This registry is the one place that knows which architectures exist; nothing else branches on the name.
"""
from __future__ import annotations

from typing import Any

from lmcore.errors import ConfigError
from lmcore.objectives.ar import ARObjective
from lmcore.objectives.base import Batch, Objective
from lmcore.objectives.diffusion import DiffusionObjective
from lmcore.objectives.sdd import SDDObjective

REGISTRY: dict[str, type[Objective]] = {"ar": ARObjective, "diffusion": DiffusionObjective, "sdd": SDDObjective}


def get_objective(name: str, section: dict[str, Any] | None = None) -> Objective:
    """Instantiate the objective for architecture `name` with its params.yaml section."""
    if name not in REGISTRY:
        raise ConfigError(f"architecture: unknown '{name}' (known: {', '.join(REGISTRY)})")
    return REGISTRY[name](section)


__all__ = ["REGISTRY", "Batch", "Objective", "get_objective"]
