"""Samplers: pure functions of (seed, step, micro); rank slices of one global batch; fixed eval sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmcore.data import (
    DocumentSampler,
    MemmapCorpus,
    RowSampler,
    WindowSampler,
    eval_documents,
    eval_windows,
    micro_samplers,
)
from lmcore.errors import DataError
from lmcore.tokenizer import EOS_ID, IGNORE_ID


@pytest.fixture(scope="module")
def train(corpus) -> MemmapCorpus:
    return MemmapCorpus(corpus, "train")


@pytest.fixture(scope="module")
def val(corpus) -> MemmapCorpus:
    return MemmapCorpus(corpus, "val")


def test_windows_are_deterministic_contiguous_and_vary(train):
    s = WindowSampler(train, 64, 8, seed=5)
    b = s.batch(3)
    assert b.shape == (8, 64) and b.dtype == torch.int64
    assert torch.equal(b, WindowSampler(train, 64, 8, seed=5).batch(3))  # fresh sampler, same batch
    assert not torch.equal(b, s.batch(4)) and not torch.equal(b, s.batch(3, micro=1))
    assert not torch.equal(b, WindowSampler(train, 64, 8, seed=6).batch(3))
    for row in b:  # each row is a contiguous slice of the packed token stream
        assert positions(train, row.numpy())


def positions(corpus: MemmapCorpus, row: np.ndarray) -> np.ndarray:
    """Where `row` occurs in the corpus's token stream."""
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(corpus.tokens), len(row))
    return np.flatnonzero((windows == row).all(axis=1))


@pytest.mark.parametrize("cls", [WindowSampler, DocumentSampler])
def test_ranks_slice_the_global_batch(train, cls):
    whole = cls(train, 48, 8, seed=9).batch(7, micro=2)
    parts = [cls(train, 48, 2, seed=9, shard=r, num_shards=4).batch(7, micro=2) for r in range(4)]
    assert torch.equal(torch.cat(parts), whole)


class IndexRows:
    """A row store whose rows are their own indices, so a batch shows which rows were drawn."""

    data_dir, split = "rows", "train"

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def rows(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(index)


def test_micro_samplers_split_one_global_batch_over_ranks_and_micro_steps():
    rows = IndexRows(1000)
    whole = RowSampler(rows, 12, seed=4).batch(5)
    shards = {}
    for rank in range(2):  # 2 ranks x 2 micro-steps of 3 rows: rank r's micro-step m holds shard 2m + r
        samplers = micro_samplers(lambda shard, n: RowSampler(rows, 3, 4, shard, n), 2, rank, 2)
        for m, sampler in enumerate(samplers):
            shards[2 * m + rank] = sampler.batch(5)
    np.testing.assert_array_equal(np.concatenate([shards[i] for i in range(4)]), whole)
    assert not np.array_equal(whole, RowSampler(rows, 12, seed=4).batch(6))
    with pytest.raises(DataError, match=r"rows \[train\]: no rows"):
        RowSampler(IndexRows(0), 2, seed=0)


def test_document_rows(train):
    length = 300  # longer than most stories: rows end with <eos> then IGNORE padding
    b = DocumentSampler(train, length, 16, seed=1).batch(0)
    assert b.shape == (16, length) and torch.equal(b, DocumentSampler(train, length, 16, seed=1).batch(0))
    lengths = np.diff(np.asarray(train.offsets))
    padded = 0
    for row in b:
        real = row[row != IGNORE_ID]
        if len(real) < length:
            padded += 1
            assert real[-1] == EOS_ID and (real == EOS_ID).sum() == 1
            assert torch.all(row[len(real) :] == IGNORE_ID)  # padding only after the document
            assert len(real) in set(lengths.tolist())
    assert padded > 0


def test_long_documents_are_cropped_to_a_seeded_window(train):
    short = 16
    b = DocumentSampler(train, short, 32, seed=2).batch(1)
    assert torch.all(b != IGNORE_ID)  # every story is longer than 16 tokens
    offsets = np.asarray(train.offsets)
    at_start = 0
    for row in b.numpy():  # a window inside one document
        p = positions(train, row)[0]
        doc = np.searchsorted(offsets, p, side="right") - 1
        assert p + short <= offsets[doc + 1]
        at_start += p == offsets[doc]
    assert torch.equal(b, DocumentSampler(train, short, 32, seed=2).batch(1))
    assert at_start < 32  # not always the document's start


def test_eval_sets_are_fixed(val):
    w = eval_windows(val, 32, 4, max_batches=3)
    assert len(w) == 3 and all(x.shape == (4, 32) for x in w)
    assert all(torch.equal(a, b) for a, b in zip(w, eval_windows(val, 32, 4, max_batches=3)))
    flat = np.asarray(val.tokens, dtype=np.int64)
    starts = [
        next(i for i in range(len(flat)) if np.array_equal(flat[i : i + 32], row)) for row in torch.cat(w).numpy()
    ]
    assert starts[0] == 0 and all(b - a >= 32 for a, b in zip(starts, starts[1:]))  # non-overlapping, spread out
    assert starts[-1] > len(flat) // 2
    everything = eval_windows(val, 32, 5, max_batches=10**6)
    assert sum(len(x) for x in everything) == val.num_tokens // 32 and len(everything[-1]) <= 5

    d = eval_documents(val, 64, 4, max_batches=2)
    assert len(d) == 2 and torch.equal(torch.cat(d), torch.cat(eval_documents(val, 64, 4, max_batches=2)))
    for i, row in enumerate(torch.cat(d)):
        doc = torch.from_numpy(np.asarray(val.document(i), dtype=np.int64))[:64]
        assert torch.equal(row[: len(doc)], doc) and torch.all(row[len(doc) :] == IGNORE_ID)


class Spy:
    """Wraps an array and records the largest read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.largest = array, 0

    def __getitem__(self, key):
        out = self.array[key]
        self.largest = max(self.largest, np.size(out))
        return out


def test_samplers_read_row_by_row(corpus):
    c = MemmapCorpus(corpus, "train")
    c.tokens, c.offsets = Spy(c.tokens), Spy(c.offsets)
    WindowSampler(c, 32, 4, seed=0).batch(0)
    DocumentSampler(c, 32, 4, seed=0).batch(0)
    eval_windows(c, 32, 4, 2)
    eval_documents(c, 32, 4, 2)
    assert c.tokens.largest == 32 and c.offsets.largest == 1


def test_bad_sizes(val, train):
    with pytest.raises(DataError, match=r"\[val\]: \d+ tokens, fewer than the window of 10000000"):
        WindowSampler(val, 10_000_000, 4, seed=0)
    with pytest.raises(DataError, match="window: must be a positive integer"):
        eval_windows(val, 0, 4, 1)
    with pytest.raises(DataError, match="shard: must be in"):
        DocumentSampler(train, 32, 4, seed=0, shard=2, num_shards=2)
