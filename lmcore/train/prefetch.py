"""Training batches built one micro-step ahead, so the host's batch work and the H2D copy overlap GPU compute.

The trainer asks for (step, micro)'s batch, queues that micro-step's forward and backward (no host sync: see
train_step), then calls `prefetch` with the next (step, micro). On CUDA the next batch is then gathered from the
memmap on the host while the GPU works through the queued kernels, placed in pinned (page-locked) memory, and
copied with `non_blocking=True` on a side stream: from pageable memory a "non-blocking" copy is staged through a
pinned buffer synchronously, so without pinning it overlaps nothing. The compute stream waits for the copy
stream only when the batch is used (`wait_stream`), and `record_stream` keeps the caching allocator from reusing
the batch's memory while the compute stream still reads it.

On CPU there is nothing to overlap: `prefetch` does nothing and `get` builds the batch when asked. Batches are
pure functions of (seed, step, micro) (lmcore/data/samplers.py), so building one early changes no value, and a
resumed run starts with an empty look-ahead: exact resume holds either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Batch = dict[str, torch.Tensor]
BatchFn = Callable[[int, int], Batch]


def next_micro(step: int, micro: int, accum_steps: int) -> tuple[int, int]:
    """The (step, micro) that follows `micro` of `step` with `accum_steps` micro-steps per optimizer step."""
    return (step, micro + 1) if micro + 1 < accum_steps else (step + 1, 0)


class BatchPrefetcher:
    """`get(step, micro)` → that batch on `device`; `prefetch(step, micro)` starts building one ahead.

    `ahead` defaults to on for CUDA devices and off elsewhere; `pin` (pinned host memory + a copy stream) needs
    CUDA. `loads` counts the batch function's calls (tests check that a prefetched batch is not built twice)."""

    def __init__(self, batch_fn: BatchFn, device: torch.device, ahead: bool | None = None) -> None:
        self.batch_fn, self.device = batch_fn, device
        cuda = device.type == "cuda"
        self.ahead = cuda if ahead is None else ahead
        self.stream = torch.cuda.Stream(device) if cuda and self.ahead else None
        self._next: tuple[tuple[int, int], Batch] | None = None
        self.loads = 0

    def get(self, step: int, micro: int) -> Batch:
        """The batch of (step, micro) on the device: the prefetched one when it is that key, else built now."""
        if self._next is not None and self._next[0] == (step, micro):
            batch = self._next[1]
            self._next = None
            if self.stream is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self.stream)
                for t in batch.values():
                    t.record_stream(current)
            return batch
        self._next = None  # a stale look-ahead (e.g. after a resume) is dropped, never used
        return self._load(step, micro)

    def prefetch(self, step: int, micro: int) -> None:
        """Start building (step, micro)'s batch (CUDA: on the host, then a non-blocking copy); no-op when off."""
        if self.ahead:
            self._next = ((step, micro), self._load(step, micro))

    def _load(self, step: int, micro: int) -> Batch:
        self.loads += 1
        host = self.batch_fn(step, micro)
        if self.stream is None:
            return {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
        with torch.cuda.stream(self.stream):
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in host.items()}
