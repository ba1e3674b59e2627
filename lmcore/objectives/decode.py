"""One-token decoding steps for the AR sampler: eager on the growing cache prefix, or compiled with fixed shapes.

Compiled: the step (backbone on one token + head) runs on a KVCache in fixed-shape mode (see `KVCache`), with
the position as a device tensor updated in place, so every token of a generation, and every later generation of
the same batch size and length, runs the one graph `torch.compile` traced (no recompile per token, no host read).
Steps are kept per model (weakly: they go with it) and per (batch, length, device, dtype), since a new cache
object would be a new graph input dynamo guards on.
"""

from __future__ import annotations

import weakref

import torch
import torch._dynamo
from torch import nn

from lmcore.models import KVCache
from lmcore.objectives.losses import output_head

# The graph is compiled with this backend; tests swap in a cheaper one on CPU.
BACKEND = "inductor"


class DecodeStep:
    """logits [B, V] of the token after `token` [B, 1], reading and extending `cache` in place."""

    def __init__(self, model: nn.Module, batch: int, max_len: int, device: torch.device, compiled: bool) -> None:
        self.model, self.head, self.compiled = model, output_head(model), compiled
        self.cache = KVCache(max_len)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        # On CUDA the graph is also captured as a CUDA graph ("reduce-overhead"): a one-token step of a small
        # model is a few hundred tiny kernels, whose launch overhead would otherwise exceed the time to read the
        # weights. The cache buffers and the position are marked static (fixed addresses), so the captured graph
        # reads and writes them in place instead of copying them in at each replay.
        cuda_graphs = compiled and device.type == "cuda" and BACKEND == "inductor"
        self._mode = "reduce-overhead" if cuda_graphs else None
        self._static_marked = not cuda_graphs
        self._step = (
            torch.compile(self._forward, dynamic=False, backend=BACKEND, mode=self._mode) if compiled else self._forward
        )

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Run the prompt [B, P] into an emptied cache; the last position's logits [B, V]."""
        self.cache.lengths, self.cache.position = {}, None  # buffers are reused: stale entries are overwritten
        hidden = self.model(prompt, cache=self.cache, return_hidden=True)[:, -1]
        if self.compiled:
            self.cache.decode_at(self.position)
            if not self._static_marked:
                for buffer in (*self.cache.keys.values(), *self.cache.values.values(), self.position):
                    torch._dynamo.mark_static_address(buffer)
                self._static_marked = True
        return self.head(hidden)

    def __call__(self, token: torch.Tensor, position: int) -> torch.Tensor:
        """Logits after writing `token` [B, 1] at `position` (positions follow the prompt one by one)."""
        if self.compiled:
            self.position.fill_(position)  # in place: the graph reads this tensor; no host sync
            return self._step(token)
        return self._forward(token)

    def _forward(self, token: torch.Tensor) -> torch.Tensor:
        positions = self.position if self.compiled else None  # eager: the cache's own length
        return self.head(self.model(token, cache=self.cache, positions=positions, return_hidden=True)[:, -1])


_STEPS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, DecodeStep]] = weakref.WeakKeyDictionary()


def decode_step(model: nn.Module, batch: int, max_len: int, device: torch.device, compiled: bool) -> DecodeStep:
    """The step for this model and shape: a fresh eager one, or the model's compiled one for this shape."""
    if not compiled:
        return DecodeStep(model, batch, max_len, device, compiled=False)
    key = (batch, max_len, str(device), torch.get_autocast_dtype(device.type), torch.is_autocast_enabled(device.type))
    steps = _STEPS.setdefault(model, {})
    if key not in steps:
        steps[key] = DecodeStep(model, batch, max_len, device, compiled=True)
    return steps[key]
