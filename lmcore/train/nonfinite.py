"""Non-finite losses and gradient norms: noticed on the device, read on the host only where it matters.

Each step's losses and gradient norm are tested with torch.isfinite on the device and the first bad step is kept
in a device tensor, so training adds no host synchronisation per step. The trainer reads it (`check`) when it
flushes the log and before it validates or saves, and stops the run there: weights updated with a NaN/inf
gradient are never written to latest.pt/best.pt, which keep the last good state. Under fp16 the GradScaler skips
overflowing steps itself, so only the loss is watched there. `train.skip_nonfinite_steps` instead skips the
optimizer step at once (`step_is_finite`, one synchronisation per step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from lmcore.errors import TrainingError

NO_STEP = 2**62  # "no bad step yet"; larger than any step so a MIN over ranks finds the first bad one


class NonFiniteGuard:
    """Remembers, on the device, the first optimizer step whose loss or gradient norm was NaN or inf."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), NO_STEP, dtype=torch.long, device=device)
        self.current = torch.zeros((), dtype=torch.bool, device=device)  # the step in progress so far

    def observe(self, value: torch.Tensor) -> None:
        """Add a loss or gradient norm of the step in progress (device ops only)."""
        self.current |= ~torch.isfinite(value.detach()).all()

    def step_is_finite(self) -> bool:
        """Whether the step in progress saw only finite values, agreed over ranks (a host sync); resets it."""
        bad = self.current.clone().to(torch.float32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self.current.zero_()
        return not bool(bad.item())

    def end_step(self, step: int) -> None:
        """Close the step in progress (its number `step`, counted from 1) without a host sync."""
        hit = self.current & (self.first_bad == NO_STEP)
        self.first_bad = torch.where(hit, torch.full_like(self.first_bad, step), self.first_bad)
        self.current.zero_()

    def check(self, last_saved: str) -> None:
        """Stop the run (TrainingError) if any step so far was non-finite: one host sync (and an all-reduce)."""
        first = self.first_bad.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        self.raise_if_bad(int(first.item()), last_saved)

    def raise_if_bad(self, first_bad: int, last_saved: str) -> None:
        """Stop the run if `first_bad` (the value of `first_bad`, read by the caller with other numbers) is a step."""
        step = first_bad
        if step != NO_STEP:
            raise TrainingError(
                f"training stopped: the loss or gradient norm became NaN/inf at step {step}; "
                f"nothing after it was saved ({last_saved}). Lower train.learning_rate, check the "
                f"data, or set train.skip_nonfinite_steps: true to skip such steps"
            )
