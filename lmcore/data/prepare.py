"""Data preparation: source → seeded train/val split → byte-level BPE → memmap token files + meta.json.

Documents stream from the source in ONE pass (each routed to train or val as it is read), in batches
that are tokenised (in parallel worker processes when num_workers > 1, order preserved; in a background
thread overlapping the reading when num_workers == 1) and appended to `{split}.bin` / `{split}.idx`. The
corpus is never held in memory: a bounded number of batches is in flight, so memory stays flat however
large the corpus. Everything is written into a hidden sibling temp folder that replaces output_dir only
once complete (see prepare_corpus).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from lmcore.data.memmap import DTYPES, FORMAT_VERSION, META_FILE, OFFSET_DTYPE, token_dtype
from lmcore.data.sources import Document, DocumentStream, iter_splits, open_source, split_documents
from lmcore.errors import DataError
from lmcore.files import pid_alive, replace_dir
from lmcore.tokenizer import (
    EOS_ID, SPECIAL_TOKENS, TOKENIZER_FILE, check_vocab_size, encode_documents, load_tokenizer, save_tokenizer,
    tokenizer_from_str, tokenizer_identity, train_tokenizer,
)

# What a prepared corpus folder may contain: only such a folder is ever replaced.
OUTPUT_FILES = {META_FILE, TOKENIZER_FILE, "train.bin", "train.idx", "val.bin", "val.idx"}


@dataclass
class SplitStats:
    """What was written for one split."""

    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    nats: float = 0.0  # -sum of document log-probabilities, when every document has one
    scored: int = 0  # documents that carried a log-probability
    # Recorded in meta.json so training can check ids against the vocabulary without reading the corpus
    # (lmcore/data/integrity.py).
    max_token_id: int = -1
    sha256: Any = field(default_factory=hashlib.sha256)  # of the split's .bin, as written


def prepare_corpus(
    source_spec: str, output_dir: str | Path, *, vocab_size: int, max_docs: int | None, val_fraction: float,
    seed: int, num_workers: int = 1, text_field: str = "text", streaming: bool = False,
    tokenizer_sample_docs: int | None = None, batch_size: int = 1000, progress: bool = True,
    name: str | None = None, tokenizer: str | Path | None = None, max_seq_len: int | None = None,
) -> dict[str, Any]:
    """Prepare `source_spec` into output_dir (tokenizer.json, {train,val}.{bin,idx}, meta.json); returns meta.

    tokenizer: an existing tokenizer.json (or its folder) to use instead of training one (its vocabulary
    size then wins over vocab_size). max_seq_len: the training block length, recorded in meta.json; every
    split must hold at least one block of max_seq_len + 1 tokens.

    Atomic: the result is built in `.{output_dir.name}.tmp-<pid>` beside output_dir and only a complete
    build replaces output_dir. A failed or interrupted run removes its temp folder and leaves a previous
    output_dir untouched (still the old, complete corpus); a folder that is not a prepared corpus is
    never replaced. Outputs are byte-identical for any num_workers.
    """
    if tokenizer is None:
        check_vocab_size(vocab_size)
    for key, value in (("num_workers", num_workers), ("batch_size", batch_size),
                       ("tokenizer_sample_docs", tokenizer_sample_docs), ("max_seq_len", max_seq_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"{key}: must be a positive integer, got {value!r}")
    output_dir = Path(output_dir)
    _check_replaceable(output_dir)
    source = open_source(source_spec, text_field=text_field, streaming=streaming, seed=seed)
    train, val = split_documents(source, max_docs, val_fraction, seed)
    if next(iter(val), None) is None:  # fail before the long part, not after it
        raise DataError(f"{source.name}: the val split is empty (no documents; raise val_fraction or max_docs)")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(output_dir)
    tmp = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if tokenizer is None:
            tok = _train_tokenizer(train, vocab_size, tokenizer_sample_docs, progress, source.name)
        else:
            tok = load_tokenizer(tokenizer)
        save_tokenizer(tok, tmp)
        dtype = token_dtype(tok.get_vocab_size())
        expected = None if train.expected is None or val.expected is None else train.expected + val.expected
        meter = train.meter
        with _Encoder(tok, dtype, num_workers) as encoder:
            stats = _write_splits(iter_splits(source, max_docs, val_fraction, seed), tmp, encoder, batch_size,
                                  progress, expected, meter.fraction if meter else None, max_docs)
        for split, st in stats.items():
            if st.documents == 0:
                raise DataError(f"{source.name}: the {split} split is empty (no documents)")
            if max_seq_len is not None and st.tokens < max_seq_len + 1:
                raise DataError(f"{source.name}: the {split} split has {st.tokens} tokens, fewer than one block of "
                                f"max_seq_len + 1 = {max_seq_len + 1} (use more documents or a shorter max_seq_len)")
        extra = {"max_seq_len": max_seq_len} if max_seq_len is not None else {}
        if tokenizer is not None:
            extra["tokenizer_from"] = str(tokenizer)
        meta = _meta(source_spec, name, tok, dtype, stats, seed=seed, val_fraction=val_fraction, max_docs=max_docs,
                     tokenizer_sample_docs=tokenizer_sample_docs, text_field=text_field,
                     own_val_split=source.has_own_val_split, **extra)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful replace
    return meta


def _meta(spec: str, name: str | None, tok: Any, dtype: str, stats: dict[str, SplitStats], **settings: Any) -> dict:
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, **({"name": name} if name else {}), "source": spec,
                            "dtype": dtype, "byteorder": "little", "vocab_size": tok.get_vocab_size(),
                            "eos_id": EOS_ID, "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                            "tokenizer": TOKENIZER_FILE, "tokenizer_identity": tokenizer_identity(tok),
                            "splits": {s: {"bin": f"{s}.bin", "offsets": f"{s}.idx", "tokens": st.tokens,
                                           "documents": st.documents, "text_bytes": st.text_bytes,
                                           "max_token_id": st.max_token_id, "sha256": st.sha256.hexdigest()}
                                       for s, st in stats.items()},
                            **settings}
    if all(st.scored == st.documents for st in stats.values()):
        # Exact log-probabilities (builtin corpora): the entropy is the floor of the validation loss.
        # Per token counts every token incl. <eos>, as the loss does.
        meta["entropy"] = {s: {"nats_per_story": st.nats / st.documents, "nats_per_token": st.nats / st.tokens,
                               "stories": st.documents} for s, st in stats.items()}
    return meta


# ---------------------------------------------------------------- tokenizer and tokenisation

def _train_tokenizer(train: DocumentStream, vocab_size: int, sample_docs: int | None, progress: bool, name: str):
    count = [0]
    expected = min(n for n in (sample_docs, train.expected, sys.maxsize) if n is not None)
    fraction = train.meter.fraction if train.meter else lambda: None

    def texts() -> Iterator[str]:
        done = 0
        with tqdm(desc="read for tokenizer", unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
            for count[0], doc in enumerate(itertools.islice(train, sample_docs), 1):
                nbytes = len(doc.text.encode("utf-8"))
                done += nbytes
                _advance(bar, nbytes, done, count[0], expected, fraction())
                yield doc.text

    tok = train_tokenizer(texts(), vocab_size)
    if count[0] == 0:
        raise DataError(f"{name}: the train split is empty (no documents)")
    return tok


def _advance(bar: tqdm, nbytes: int, bytes_done: int, docs_done: int, expected_docs: int | None,
             read_fraction: float | None = None) -> None:
    """Advance a bytes progress bar (MB/s); its total, hence the ETA, is extrapolated from what is known.

    Known document count (hub datasets, max_docs): bytes per document so far times the count. Local
    files: text bytes so far over the share of the files' bytes read (a compressed-byte estimate).
    """
    totals = []
    if expected_docs and expected_docs < sys.maxsize and docs_done:
        totals.append(bytes_done / docs_done * expected_docs)
    if read_fraction:
        totals.append(bytes_done / read_fraction)
    if totals:  # e.g. a tokenizer sample larger than the corpus: whichever ends first
        bar.total = max(bytes_done, round(min(totals)))
    bar.update(nbytes)


class _BatchEncoder:
    """Tokenises a batch of texts into one flat array (each document + <eos>) and document lengths."""

    def __init__(self, tok: Any, dtype: str) -> None:
        self.tok, self.dtype = tok, DTYPES[dtype]  # a Tokenizer, or its JSON (rebuilt in each worker process)
        if isinstance(tok, str):
            self.tok = tokenizer_from_str(tok)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = encode_documents(self.tok, texts)
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        for x in ids:
            x.append(EOS_ID)
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        return flat, lengths


_worker: _BatchEncoder | None = None  # one per worker process, set once by _init_worker
_inherited: _BatchEncoder | None = None  # the parent's, which forked workers take over (no re-parsing)


def _init_worker(tok_json: str | None, dtype: str) -> None:
    global _worker
    # Ctrl-C reaches the whole process group: only the parent handles it (and terminates the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent's SIGTERM handler (see stages/prep_openwebtext.py) is inherited by fork; the pool ends its
    # workers with SIGTERM, which must simply end them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker = _inherited if tok_json is None else _BatchEncoder(tok_json, dtype)


def _work(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker is not None
    return _worker(texts)


class _Encoder:
    """Ordered, bounded map of _BatchEncoder over batches: in a background thread, or over a pool of processes.

    num_workers == 1: one thread in this process; HF tokenizers releases the GIL while encoding and
    spreads each batch over its own thread pool, so reading the next batch overlaps the encoding.
    num_workers > 1: that many single-threaded worker processes (one tokenizer each).
    """

    def __init__(self, tok: Any, dtype: str, num_workers: int) -> None:
        self.num_workers, self.pool = num_workers, None
        # In-process: the caller's tokenizer itself (re-parsing a 32k vocabulary costs ~0.1 s).
        self.local = _BatchEncoder(tok, dtype) if num_workers == 1 else None
        self.thread: ThreadPoolExecutor | None = None
        self.tok, self.dtype = tok, dtype

    def __enter__(self) -> "_Encoder":
        if self.num_workers == 1:
            self.thread = ThreadPoolExecutor(1, thread_name_prefix="tokenise")
        else:
            global _inherited
            fork = "fork" in multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if fork else None)
            # Forked workers share the parent's parsed tokenizer (copy-on-write); others rebuild it from JSON.
            _inherited = _BatchEncoder(self.tok, self.dtype) if fork else None
            args = (None if fork else self.tok.to_str(), self.dtype)
            # Children of a process that already used the tokenizers thread pool would print a warning
            # and go single-threaded anyway; saying so up front keeps the log clean. Restored after the fork.
            saved = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                self.pool = ctx.Pool(self.num_workers, initializer=_init_worker, initargs=args)
            finally:
                if saved is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = saved
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.thread is not None:
            self.thread.shutdown(wait=True, cancel_futures=True)
        if self.pool is not None:
            global _inherited
            self.pool.terminate()
            self.pool.join()
            _inherited = None

    def map(self, batches: Iterable[list[str]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encoded batches in input order; at most 2 per worker in flight, so memory stays bounded."""
        if self.thread is not None:
            assert self.local is not None
            submit = lambda batch: self.thread.submit(self.local, batch)  # noqa: E731
            result = lambda future: future.result()  # noqa: E731
        else:
            assert self.pool is not None
            submit = lambda batch: self.pool.apply_async(_work, (batch,))  # noqa: E731
            result = lambda async_result: async_result.get()  # noqa: E731
        pending: deque = deque()
        for batch in batches:
            pending.append(submit(batch))
            if len(pending) >= 2 * self.num_workers:
                yield result(pending.popleft())
        while pending:
            yield result(pending.popleft())


def _write_splits(docs: Iterable[tuple[str, Document]], out: Path, encoder: _Encoder, batch_size: int,
                  progress: bool, expected: int | None, read_fraction: Any = None,
                  max_docs: int | None = None) -> dict[str, SplitStats]:
    """Stream (split, document) pairs through the encoder into out/{split}.bin and out/{split}.idx.

    Batches hold documents of one split, in source order, so each split's files do not depend on
    batching or on the number of workers.
    """
    stats = {"train": SplitStats(), "val": SplitStats()}
    queued: deque[tuple[str, int, int, float, int]] = deque()  # per batch in flight: split, docs, bytes, nats, scored
    total = SplitStats()

    def batches() -> Iterator[list[str]]:
        pending: dict[str, list[Document]] = {"train": [], "val": []}

        def flush(split: str) -> list[str]:
            batch, pending[split] = pending[split], []
            scored = [d.logprob for d in batch if d.logprob is not None]
            queued.append((split, len(batch), sum(len(d.text.encode("utf-8")) for d in batch), -sum(scored),
                           len(scored)))
            return [d.text for d in batch]

        for split, doc in docs:
            pending[split].append(doc)
            if len(pending[split]) >= batch_size:
                yield flush(split)
        for split in ("train", "val"):
            if pending[split]:
                yield flush(split)

    files = {s: (open(out / f"{s}.bin", "wb"), open(out / f"{s}.idx", "wb")) for s in stats}
    try:
        for _, idx_f in files.values():
            idx_f.write(np.zeros(1, OFFSET_DTYPE).tobytes())
        with tqdm(desc="tokenise", unit="B", unit_scale=True, unit_divisor=1000, disable=not progress,
                  file=sys.stderr, smoothing=0.1) as bar:
            for flat, lengths in encoder.map(batches()):
                split, n, nbytes, nats, scored = queued.popleft()
                st = stats[split]
                bin_f, idx_f = files[split]
                bin_f.write(flat.tobytes())
                st.sha256.update(flat)
                if flat.size:
                    st.max_token_id = max(st.max_token_id, int(flat.max()))
                idx_f.write((np.cumsum(lengths) + st.tokens).astype(OFFSET_DTYPE).tobytes())
                for agg in (st, total):
                    agg.documents += n
                    agg.tokens += int(lengths.sum())
                    agg.text_bytes += nbytes
                    agg.nats += nats
                    agg.scored += scored
                bar.set_postfix(docs=total.documents, tokens=total.tokens, refresh=False)
                fraction = read_fraction() if read_fraction else None
                if max_docs and fraction is not None:
                    fraction = max(fraction, total.documents / max_docs)
                _advance(bar, nbytes, total.text_bytes, total.documents, expected, fraction)
    finally:
        for bin_f, idx_f in files.values():
            bin_f.close()
            idx_f.close()
    return stats


# ---------------------------------------------------------------- atomic output

def _check_replaceable(output_dir: Path) -> None:
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise DataError(f"{output_dir}: exists and is not a folder")
    names = {p.name for p in output_dir.iterdir()}
    if names and META_FILE not in names and not names <= OUTPUT_FILES:
        raise DataError(f"{output_dir}: exists and is not a prepared corpus (no {META_FILE}); refusing to replace it")


def _remove_stale(output_dir: Path) -> None:
    """Remove temp folders that killed runs (SIGKILL skips `finally`) left beside output_dir."""
    for path in output_dir.parent.glob(f".{output_dir.name}.*-*"):
        kind, _, pid = path.name[len(output_dir.name) + 2:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)

