"""AR on document rows (ar.rows: documents): each row is one document from the <eos> that opens it, like the rows
diffusion and SDD train on; a cropped document is a contiguous span of the stream, opened by its preceding token."""

from __future__ import annotations

import numpy as np
import pytest

from lmcore.config import TrainConfig
from lmcore.data import DocumentSampler, MemmapCorpus
from lmcore.errors import ConfigError
from lmcore.objectives import get_objective
from lmcore.tokenizer import EOS_ID, IGNORE_ID
from lmcore.train.run import corpus_batches


@pytest.fixture(scope="module")
def train(corpus) -> MemmapCorpus:
    return MemmapCorpus(corpus, "train")


def _document(corpus: MemmapCorpus, i: int) -> np.ndarray:
    return np.asarray(corpus.tokens[int(corpus.offsets[i]) : int(corpus.offsets[i + 1])])


def _source(corpus: MemmapCorpus, row: np.ndarray) -> tuple[int, int]:
    """(document, offset) whose tokens the unpadded part of `row` after its first token continues."""
    body = row[1:][row[1:] != IGNORE_ID]
    for i in range(corpus.num_documents):
        doc = _document(corpus, i)
        for off in range(len(doc) - len(body) + 1):
            if np.array_equal(doc[off : off + len(body)], body):
                return i, off
    raise AssertionError("row is not a span of any document")


def test_document_rows_open_with_eos_and_hold_one_whole_document(train):
    length = 400  # every document of the test corpus fits
    rows = DocumentSampler(train, length, 6, seed=3, opener=1).batch(2).numpy()
    assert rows.shape == (6, length + 1)
    for row in rows:
        assert row[0] == EOS_ID
        i, off = _source(train, row)
        doc = _document(train, i)
        assert off == 0 and np.array_equal(row[1 : 1 + len(doc)], doc)  # from its start, closing <eos> included
        assert (row[1 + len(doc) :] == IGNORE_ID).all()


def test_cropped_document_rows_are_contiguous_spans(train):
    length = 8  # shorter than every document: every row is a crop
    rows = DocumentSampler(train, length, 16, seed=4, opener=1).batch(0).numpy()
    assert rows.shape == (16, length + 1) and not (rows == IGNORE_ID).any()
    # Documents follow each other on the packed stream, each after the previous one's <eos>: a crop opened by the
    # token before it (or by that <eos> at its document's start) is a contiguous span of the stream.
    spans = np.lib.stride_tricks.sliding_window_view(np.asarray(train.tokens), length + 1)
    for row in rows:
        assert (spans == row).all(1).any()
    assert len({int(r[0]) for r in rows}) > 1  # not all opened by <eos>: the crops start inside documents


def test_corpus_batches_follow_ar_rows(corpus):
    cfg = TrainConfig(seq_len=400, batch_size=4, eval_batches=1)  # every document fits a row
    docs_fn, docs_val = corpus_batches(get_objective("ar", {"rows": "documents"}), corpus, cfg)
    win_fn, win_val = corpus_batches(get_objective("ar", {"rows": "windows"}), corpus, cfg)
    docs, windows = docs_fn(0, 0)["tokens"], win_fn(0, 0)["tokens"]
    assert docs.shape == windows.shape == (4, 401)
    assert (docs[:, 0] == EOS_ID).all()
    assert not any("packed" in b for b in docs_val)  # no packed windows to score a document-trained AR on
    assert any("packed" in b for b in win_val)
    # Both are validated per document on the same rows.
    assert [b["tokens"].tolist() for b in docs_val] == [b["tokens"].tolist() for b in win_val if "packed" not in b]


def test_bad_rows_value_is_one_line_error():
    with pytest.raises(ConfigError, match=r"ar.rows must be one of windows\|documents, got 'docs'"):
        get_objective("ar", {"rows": "docs"})
