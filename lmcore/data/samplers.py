"""Batch samplers over a memory-mapped corpus or prepared instruction rows, deterministic in (seed, step, micro).

Each batch is a pure function of (seed, step, micro): resuming at step s needs no sampler state. A step's GLOBAL
batch (batch_size * num_shards rows) is drawn once from the same rng by every shard, shard i keeping rows
[i * batch_size, (i + 1) * batch_size); a shard is one rank's share of one micro-step (`micro_samplers`: shard
m·W + r for rank r's micro-step m of W ranks). Two shards therefore see exactly what one with a doubled batch
sees. Rows are read from the memmap one by one.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from lmcore.errors import DataError
from lmcore.tokenizer import EOS_ID, IGNORE_ID


def _where(corpus: Any) -> str:
    return f"{getattr(corpus, 'data_dir', 'corpus')} [{getattr(corpus, 'split', '?')}]"


def _positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{key}: must be a positive integer, got {value!r}")


def _check_shard(batch_size: int, seed: int, shard: int, num_shards: int) -> None:
    _positive("batch_size", batch_size)
    _positive("num_shards", num_shards)
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed: must be a non-negative integer, got {seed!r}")
    if not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise DataError(f"shard: must be in [0, {num_shards}), got {shard!r}")


def _check(corpus: Any, length: int, batch_size: int, seed: int, shard: int, num_shards: int, what: str) -> None:
    _positive(what, length)
    _check_shard(batch_size, seed, shard, num_shards)
    if corpus.num_documents == 0:
        raise DataError(f"{_where(corpus)}: no documents")


def _rng(seed: int, step: int, micro: int) -> np.random.Generator:
    if step < 0 or micro < 0:
        raise ValueError(f"step and micro must be non-negative, got step={step}, micro={micro}")
    return np.random.default_rng([seed, step, micro])


def _document_row(corpus: Any, i: int, length: int, start: int = 0, opener: int = 0) -> np.ndarray:
    """Document i from token `start` on, at most `length` tokens, padded with IGNORE_ID to `length`; `opener`
    <eos> tokens go first (what precedes a document on the packed stream), the row being `opener` longer."""
    lo, hi = int(corpus.offsets[i]), int(corpus.offsets[i + 1])
    toks = corpus.tokens[lo + start: min(hi, lo + start + length)]
    row = np.full(opener + length, IGNORE_ID, dtype=np.int64)
    row[:opener] = EOS_ID
    row[opener: opener + len(toks)] = toks
    return row


class _ShardedSampler:
    """The rule every sampler follows: draws for the global batch from (seed, step, micro), this shard's slice kept."""

    def __init__(self, batch_size: int, seed: int, shard: int, num_shards: int) -> None:
        self.batch_size, self.seed, self.shard, self.num_shards = batch_size, seed, shard, num_shards

    def _global(self, step: int, micro: int) -> tuple[np.random.Generator, int]:
        """The rng of (seed, step, micro) and the global batch size every draw must cover."""
        return _rng(self.seed, step, micro), self.batch_size * self.num_shards

    def _mine(self, drawn: np.ndarray) -> np.ndarray:
        """This shard's rows of a global draw."""
        return drawn[self.shard * self.batch_size:(self.shard + 1) * self.batch_size]


class WindowSampler(_ShardedSampler):
    """Random contiguous windows of the packed token stream (documents run into each other after <eos>)."""

    def __init__(self, corpus: Any, window: int, batch_size: int, seed: int, shard: int = 0, num_shards: int = 1):
        _check(corpus, window, batch_size, seed, shard, num_shards, "window")
        if corpus.num_tokens < window:
            raise DataError(f"{_where(corpus)}: {corpus.num_tokens} tokens, fewer than the window of {window}")
        super().__init__(batch_size, seed, shard, num_shards)
        self.corpus, self.window = corpus, window

    def batch(self, step: int, micro: int = 0) -> torch.Tensor:
        """This shard's [batch_size, window] int64 rows for (step, micro)."""
        rng, n = self._global(step, micro)
        starts = self._mine(rng.integers(0, self.corpus.num_tokens - self.window + 1, size=n))
        rows = np.stack([self.corpus.tokens[s:s + self.window] for s in starts]).astype(np.int64)
        return torch.from_numpy(rows)


class DocumentSampler(_ShardedSampler):
    """One random document per row, <eos> included, padded with IGNORE_ID; long ones cropped to a random window.

    `opener` <eos> tokens open a row that starts at its document's start (an autoregressive model's document start,
    as on the packed stream); a cropped row starts `opener` tokens earlier in its document instead, so every row is
    a contiguous span of the stream, `length + opener` wide."""

    def __init__(self, corpus: Any, length: int, batch_size: int, seed: int, shard: int = 0, num_shards: int = 1,
                 opener: int = 0):
        _check(corpus, length, batch_size, seed, shard, num_shards, "length")
        super().__init__(batch_size, seed, shard, num_shards)
        self.corpus, self.length, self.opener = corpus, length, opener

    def batch(self, step: int, micro: int = 0) -> torch.Tensor:
        """This shard's [batch_size, length + opener] int64 rows for (step, micro)."""
        rng, n = self._global(step, micro)
        # Both draws cover the global batch, so every shard's rows agree with the single-process batch.
        docs = rng.integers(0, self.corpus.num_documents, size=n)
        crop = rng.random(n)
        rows = []
        for d, u in zip(self._mine(docs), self._mine(crop)):
            size = int(self.corpus.offsets[d + 1] - self.corpus.offsets[d])
            start = int(u * (size - self.length + 1)) if size > self.length else 0
            if start >= self.opener > 0:  # the tokens before a cropped span open it, not an <eos>
                rows.append(_document_row(self.corpus, int(d), self.length + self.opener, start - self.opener))
            else:
                rows.append(_document_row(self.corpus, int(d), self.length, start, opener=self.opener))
        return torch.from_numpy(np.stack(rows))


class RowSampler(_ShardedSampler):
    """Random rows, with replacement, of prepared fixed-width rows (an InstructSplit: `len()` and `rows(index)`)."""

    def __init__(self, rows: Any, batch_size: int, seed: int, shard: int = 0, num_shards: int = 1):
        _check_shard(batch_size, seed, shard, num_shards)
        if len(rows) == 0:
            raise DataError(f"{_where(rows)}: no rows")
        super().__init__(batch_size, seed, shard, num_shards)
        self.rows = rows

    def batch(self, step: int, micro: int = 0) -> Any:
        """This shard's rows for (step, micro), as `rows.rows` returns them."""
        rng, n = self._global(step, micro)
        return self.rows.rows(self._mine(rng.integers(0, len(self.rows), size=n)))


S = TypeVar("S", bound=_ShardedSampler)


def micro_samplers(make: Callable[[int, int], S], grad_accum_steps: int, rank: int = 0, world_size: int = 1
                   ) -> list[S]:
    """Rank `rank`'s sampler for each micro-step, built by make(shard, shards).

    A step's global batch is batch_size · grad_accum_steps · world_size rows drawn at once from (seed, step);
    rank r's micro-step m gets shard m·world_size + r, so any split of the same global batch over ranks and
    micro-steps trains on the same rows (call each sampler's batch(step), micro 0)."""
    shards = grad_accum_steps * world_size
    return [make(m * world_size + rank, shards) for m in range(grad_accum_steps)]


def _batched(rows: list[np.ndarray], batch_size: int) -> list[torch.Tensor]:
    return [torch.from_numpy(np.stack(rows[i:i + batch_size])) for i in range(0, len(rows), batch_size)]


def eval_windows(corpus: Any, window: int, batch_size: int, max_batches: int) -> list[torch.Tensor]:
    """Fixed validation set: up to max_batches * batch_size evenly spaced, non-overlapping windows.

    Batches hold batch_size rows; the last one is smaller when the corpus has too few windows.
    """
    _check(corpus, window, batch_size, 0, 0, 1, "window")
    if corpus.num_tokens < window:
        raise DataError(f"{_where(corpus)}: {corpus.num_tokens} tokens, fewer than the window of {window}")
    n = min(max_batches * batch_size, corpus.num_tokens // window)
    # Spread the windows over the whole split; n <= num_tokens // window keeps stride >= window.
    stride = (corpus.num_tokens - window) // (n - 1) if n > 1 else 0
    rows = [np.asarray(corpus.tokens[i * stride:i * stride + window], dtype=np.int64) for i in range(n)]
    return _batched(rows, batch_size)


def eval_documents(corpus: Any, length: int, batch_size: int, max_batches: int, opener: int = 0
                   ) -> list[torch.Tensor]:
    """Fixed validation set: the first max_batches * batch_size documents, each from its start (at most `length`
    of its tokens, <eos> included), padded with IGNORE_ID.

    `opener` <eos> tokens open each row (rows are `length + opener` wide): an autoregressive model reads the
    <eos> that starts a document on the packed stream and predicts every document token from it, so with
    opener=1 it scores exactly the tokens a document objective scores with opener=0 (the same documents, the same
    crop). Batches hold batch_size rows; the last one is smaller when the split has too few documents.
    """
    _check(corpus, length, batch_size, 0, 0, 1, "length")
    n = min(max_batches * batch_size, corpus.num_documents)
    return _batched([_document_row(corpus, i, length, opener=opener) for i in range(n)], batch_size)
