"""`torch.compile` of the training forward: one place that decides how shapes are traced and how many graphs
a run may need.

Why static shapes per curriculum stage: SDD's denoiser runs over L·k slots and its k grows along a curriculum
(lmcore/objectives/sdd.py). With torch's default ("automatic dynamic") the first k change re-traces the whole
model with a symbolic length, and that symbolic graph is what every later stage runs, with kernels tuned for no
length in particular. An objective whose shapes change only at a few known points sets `compile_dynamic = False`:
each stage then gets exactly one static graph, compiled when the stage starts and reused for all its steps. The
recompile limit is raised to hold one graph per stage in training mode and one in evaluation mode (module.training
is part of the guards), so no stage ever falls back to eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
from torch import nn

# Graphs beyond the stages: the first training graph can be followed by one traced under no_grad (validation).
_SPARE_GRAPHS = 2


def graphs_needed(stages: int) -> int:
    """Compiled graphs a run with `stages` shape stages may hold: training + evaluation per stage, and spares."""
    return 2 * max(stages, 1) + _SPARE_GRAPHS


def raise_recompile_limit(graphs: int) -> None:
    """Let dynamo keep at least `graphs` graphs per code object (the option's name changed in PyTorch 2.6)."""
    config: Any = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), graphs))


def compile_model(
    module: nn.Module,
    *,
    dynamic: bool | None = None,
    stages: int = 1,
    backend: str | Callable = "inductor",
    regional: bool = False,
) -> nn.Module:
    """`torch.compile(module)` for a run whose input shapes take `stages` distinct values; `dynamic=False` traces
    each one with static shapes (see the module docstring), None leaves torch's automatic dynamic on. `backend`
    is inductor in training; tests pass a counting backend.

    `regional`: compile each of `module.blocks` in place instead of the whole module (PyTorch's "regional
    compilation" recipe). The blocks share one code object and one shape, so one compilation serves all layers:
    compile time is that of one block instead of the whole stack, while the head, the loss and the
    embeddings stay eager. The module itself is returned, its blocks compiled."""
    raise_recompile_limit(graphs_needed(stages))
    if regional:
        for block in module.blocks:
            block.compile(dynamic=dynamic, backend=backend)
        return module
    return torch.compile(module, dynamic=dynamic, backend=backend)
