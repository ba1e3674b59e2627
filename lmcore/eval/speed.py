"""Sampling speed: generated tokens per second and seconds per sample, at batch 1 and batched.

AR decodes left to right with its KV cache (one network call per token, stopping when every row emitted <eos>);
diffusion and SDD run a fixed number of steps over the whole row, so their cost follows the step count, not the
text length. "Tokens" are the generated text tokens up to and including <eos> (the useful output).
"""

from __future__ import annotations

import torch

from lmcore.eval.generation import sample_rows, split_row
from lmcore.train.checkpoint import LoadedModel
from lmcore.train.trainer import step_generator


def device_facts(loaded: LoadedModel) -> dict[str, object]:
    """Where the numbers were measured: device (name), compute dtype, CPU threads."""
    facts: dict[str, object] = {
        "device": str(loaded.device),
        "dtype": loaded.dtype_name,
        "threads": torch.get_num_threads(),
    }
    if loaded.device.type == "cuda":
        facts["device_name"] = torch.cuda.get_device_name(loaded.device)
    return facts


def rate(tokens: int, seconds: float, samples: int, batch_size: int) -> dict[str, float]:
    """The speed record of one measurement."""
    seconds = max(seconds, 1e-9)
    return {
        "tokens_per_sec": tokens / seconds,
        "seconds_per_sample": seconds / max(samples, 1),
        "batch_size": batch_size,
        "samples": samples,
    }


def warm_up(loaded: LoadedModel, length: int, steps: int | None) -> None:
    """One untimed full-length call (two steps at most), so allocations and kernel selection are not timed."""
    gen = step_generator(0, 2000, 0, loaded.device)
    sample_rows(loaded, 1, length, gen, prompt=None, steps=min(steps, 2) if steps else None, temperature=1.0, top_p=1.0)


def measure(
    loaded: LoadedModel,
    length: int,
    steps: int | None,
    batch_size: int,
    repeats: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> dict[str, float]:
    """Speed of `repeats` sampling calls of `batch_size` unconditional rows of `length` tokens."""
    tokens = samples = 0
    seconds = 0.0
    for r in range(repeats):
        gen = step_generator(seed, 3000 + (steps or 0), r, loaded.device)
        ids, dt = sample_rows(
            loaded, batch_size, length, gen, prompt=None, steps=steps, temperature=temperature, top_p=top_p
        )
        seconds += dt
        for row in ids.tolist():
            body, ended = split_row(row, 0)
            tokens += len(body) + ended
            samples += 1
    return rate(tokens, seconds, samples, batch_size)
