"""Samples from any architecture through its objective's `sample`: unconditional, or continuing a prompt.

Rows are cut at the first <eos>, <ignore> or <pad> (the samplers' end-of-text conventions); a row "ended" when the
model itself emitted <eos>. An autoregressive objective sees a document start as the <eos> before it (on the packed
stream and on its document rows: `extra_tokens`), so its prompts get that <eos> in front; the others start at 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lmcore.progress import Progress
from lmcore.tokenizer import EOS_ID, IGNORE_ID, PAD_ID, decode
from lmcore.train.checkpoint import LoadedModel
from lmcore.train.trainer import step_generator

_STOP = (EOS_ID, IGNORE_ID, PAD_ID)


@dataclass
class Sample:
    """One generated text: its prompt and generated token ids, decoded text and whether it stopped by itself."""

    prompt_ids: list[int]
    ids: list[int]  # generated tokens after the prompt, up to (not including) the end of text
    ended: bool  # the model emitted <eos>
    text: str = ""  # prompt + generation, decoded
    continuation: str = ""  # the generation alone, decoded
    meta: dict = field(default_factory=dict)


def steps_knob(loaded: LoadedModel) -> int | None:
    """The sampler's default number of steps, or None for samplers without steps (left-to-right decoding)."""
    for name in ("sampling_steps",):  # the objectives' config name for it
        value = getattr(loaded.objective.cfg, name, None)
        if value is not None:
            return int(value)
    return None


def doc_start(loaded: LoadedModel) -> list[int]:
    """Tokens that open a document for this objective: AR's <eos> (`extra_tokens`), nothing for the others."""
    return [EOS_ID] * loaded.objective.extra_tokens


def split_row(row: Sequence[int], prompt_len: int) -> tuple[list[int], bool]:
    """(generated ids up to the end of text, ended with <eos>) of one sampled row."""
    gen = [int(t) for t in row[prompt_len:]]
    for i, t in enumerate(gen):
        if t in _STOP:
            return gen[:i], t == EOS_ID
    return gen, False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def sample_rows(
    loaded: LoadedModel,
    num: int,
    length: int,
    gen: torch.Generator,
    *,
    prompt: torch.Tensor | None,
    steps: int | None,
    temperature: float,
    top_p: float,
) -> tuple[torch.Tensor, float]:
    """One sampling call, timed: ([num, length (+ doc start)] ids on CPU, seconds)."""
    _sync(loaded.device)
    start = time.perf_counter()
    with loaded.autocast():
        ids = loaded.objective.sample(
            loaded.model, num, length, gen, prompt=prompt, temperature=temperature, top_p=top_p, steps=steps
        )
    _sync(loaded.device)
    return ids.cpu(), time.perf_counter() - start


def generate(
    loaded: LoadedModel,
    tok,
    num: int,
    length: int,
    *,
    prompts: Sequence[Sequence[int]] | None = None,
    steps: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 25,
    seed: int = 0,
    tag: int = 0,
    progress: str | None = None,
) -> tuple[list[Sample], dict[str, float]]:
    """`num` samples of `length` tokens (prompt included), in batches; with `prompts` (all the same length) row i
    continues prompts[i]. Returns the samples and timing {"seconds", "tokens", "samples", "batch_size"}.
    With `progress` (its label), samples done/total and the ETA are shown as they come (lmcore/progress.py)."""
    start_ids = doc_start(loaded)
    if prompts is not None and any(len(p) >= length for p in prompts):
        raise ValueError(f"generate: prompts must be shorter than length={length}")
    samples: list[Sample] = []
    seconds = 0.0
    shown = Progress(num, progress, "sample") if progress else None
    for b, lo in enumerate(range(0, num, batch_size)):
        n = min(batch_size, num - lo)
        gen = step_generator(seed, 1000 + tag, b, loaded.device)  # disjoint from training's generators
        prompt, plen, call_len = None, 0, length  # without a prompt the sampler opens the document itself
        if prompts is not None:
            rows = [start_ids + list(p) for p in prompts[lo : lo + n]]
            prompt = torch.tensor(rows, dtype=torch.long, device=loaded.device)
            plen, call_len = prompt.shape[1], length + len(start_ids)
        ids, dt = sample_rows(
            loaded, n, call_len, gen, prompt=prompt, steps=steps, temperature=temperature, top_p=top_p
        )
        seconds += dt
        for row in ids.tolist():
            body, ended = split_row(row, plen)
            p_ids = row[len(start_ids) : plen] if prompts is not None else []
            samples.append(Sample(p_ids, body, ended, decode(tok, p_ids + body), decode(tok, body)))
        if shown is not None:
            shown.update(len(samples))
    if shown is not None:
        shown.close()
    tokens = sum(len(s.ids) + s.ended for s in samples)  # generated tokens, the closing <eos> included
    return samples, {"seconds": seconds, "tokens": tokens, "samples": len(samples), "batch_size": batch_size}
