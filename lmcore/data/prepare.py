"""Data preparation: source → seeded train/val split → byte-level BPE → memmap token files + meta.json.

Documents stream from the source in batches, are tokenised (in parallel worker processes when
num_workers > 1, order preserved) and appended to `{split}.bin` / `{split}.idx`; the corpus is never
held in memory. Everything is written into a hidden sibling temp folder that replaces output_dir
only once complete (see prepare_corpus).
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from lmcore.data.memmap import DTYPES, FORMAT_VERSION, META_FILE, OFFSET_DTYPE, token_dtype
from lmcore.data.sources import Document, DocumentStream, open_source, split_documents
from lmcore.errors import DataError
from lmcore.tokenizer import (
    EOS_ID, SPECIAL_TOKENS, TOKENIZER_FILE, check_vocab_size, encode_documents, save_tokenizer,
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


def prepare_corpus(
    source_spec: str, output_dir: str | Path, *, vocab_size: int, max_docs: int | None, val_fraction: float,
    seed: int, num_workers: int = 1, text_field: str = "text", streaming: bool = False,
    tokenizer_sample_docs: int | None = None, batch_size: int = 1000, progress: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """Prepare `source_spec` into output_dir (tokenizer.json, {train,val}.{bin,idx}, meta.json); returns meta.

    Atomic: the result is built in `.{output_dir.name}.tmp-<pid>` beside output_dir and only a complete
    build replaces output_dir. A failed or interrupted run removes its temp folder and leaves a previous
    output_dir untouched (still the old, complete corpus); a folder that is not a prepared corpus is
    never replaced. Outputs are byte-identical for any num_workers.
    """
    check_vocab_size(vocab_size)
    for key, value in (("num_workers", num_workers), ("batch_size", batch_size),
                       ("tokenizer_sample_docs", tokenizer_sample_docs)):
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
        tok = _train_tokenizer(train, vocab_size, tokenizer_sample_docs, progress, source.name)
        save_tokenizer(tok, tmp)
        dtype = token_dtype(tok.get_vocab_size())
        stats: dict[str, SplitStats] = {}
        with _Encoder(tok.to_str(), dtype, num_workers) as encoder:
            for split, docs in (("train", train), ("val", val)):
                stats[split] = _write_split(docs, tmp, split, encoder, batch_size, progress)
                if stats[split].documents == 0:
                    raise DataError(f"{source.name}: the {split} split is empty (no documents)")
        meta = _meta(source_spec, name, tok, dtype, stats, seed=seed, val_fraction=val_fraction, max_docs=max_docs,
                     tokenizer_sample_docs=tokenizer_sample_docs, text_field=text_field,
                     own_val_split=source.has_own_val_split)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful replace
    return meta


def _meta(spec: str, name: str | None, tok: Any, dtype: str, stats: dict[str, SplitStats], **settings: Any) -> dict:
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, **({"name": name} if name else {}), "source": spec,
                            "dtype": dtype, "byteorder": "little", "vocab_size": tok.get_vocab_size(),
                            "eos_id": EOS_ID, "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                            "tokenizer": TOKENIZER_FILE, "tokenizer_identity": tokenizer_identity(tok),
                            "splits": {s: {"bin": f"{s}.bin", "offsets": f"{s}.idx", "tokens": st.tokens,
                                           "documents": st.documents, "text_bytes": st.text_bytes}
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

    def texts() -> Iterator[str]:
        done = 0
        with tqdm(desc="read for tokenizer", unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
            for count[0], doc in enumerate(itertools.islice(train, sample_docs), 1):
                nbytes = len(doc.text.encode("utf-8"))
                done += nbytes
                _advance(bar, nbytes, done, count[0], expected)
                yield doc.text

    tok = train_tokenizer(texts(), vocab_size)
    if count[0] == 0:
        raise DataError(f"{name}: the train split is empty (no documents)")
    return tok


def _advance(bar: tqdm, nbytes: int, bytes_done: int, docs_done: int, expected_docs: int | None) -> None:
    """Advance a bytes progress bar; its total (hence ETA) is extrapolated when the document count is known."""
    if expected_docs and expected_docs < sys.maxsize:
        bar.total = max(bytes_done, round(bytes_done / docs_done * expected_docs))
    bar.update(nbytes)


class _BatchEncoder:
    """Tokenises a batch of texts into one flat array (each document + <eos>) and document lengths."""

    def __init__(self, tok_json: str, dtype: str) -> None:
        self.tok, self.dtype = tokenizer_from_str(tok_json), DTYPES[dtype]

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = encode_documents(self.tok, texts)
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        for x in ids:
            x.append(EOS_ID)
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        return flat, lengths


_worker: _BatchEncoder | None = None  # one per worker process, built once by _init_worker


def _init_worker(tok_json: str, dtype: str) -> None:
    global _worker
    # Ctrl-C reaches the whole process group: only the parent handles it (and terminates the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = _BatchEncoder(tok_json, dtype)


def _work(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker is not None
    return _worker(texts)


class _Encoder:
    """Ordered, bounded map of _BatchEncoder over batches: in-process, or over a pool of processes."""

    def __init__(self, tok_json: str, dtype: str, num_workers: int) -> None:
        self.num_workers, self.pool = num_workers, None
        self.local = _BatchEncoder(tok_json, dtype) if num_workers == 1 else None
        self._args = (tok_json, dtype)

    def __enter__(self) -> "_Encoder":
        if self.num_workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            # Children of a process that already used the tokenizers thread pool would print a warning
            # and go single-threaded anyway; saying so up front keeps the log clean. Restored after the fork.
            saved = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                self.pool = ctx.Pool(self.num_workers, initializer=_init_worker, initargs=self._args)
            finally:
                if saved is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = saved
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def map(self, batches: Iterable[list[str]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encoded batches in input order; at most 2 per worker in flight, so memory stays bounded."""
        if self.pool is None:
            assert self.local is not None
            yield from map(self.local, batches)
            return
        pending: deque = deque()
        for batch in batches:
            pending.append(self.pool.apply_async(_work, (batch,)))
            if len(pending) >= 2 * self.num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _write_split(docs: DocumentStream, out: Path, split: str, encoder: _Encoder, batch_size: int,
                 progress: bool) -> SplitStats:
    """Stream `docs` through the encoder into out/{split}.bin and out/{split}.idx."""
    stats = SplitStats()
    queued: deque[tuple[int, int, float, int]] = deque()  # per batch in flight: docs, bytes, nats, scored

    def batches() -> Iterator[list[str]]:
        it = iter(docs)
        while batch := list(itertools.islice(it, batch_size)):
            scored = [d.logprob for d in batch if d.logprob is not None]
            queued.append((len(batch), sum(len(d.text.encode("utf-8")) for d in batch), -sum(scored), len(scored)))
            yield [d.text for d in batch]

    with open(out / f"{split}.bin", "wb") as bin_f, open(out / f"{split}.idx", "wb") as idx_f, \
            tqdm(desc=f"tokenise {split}", unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        idx_f.write(np.zeros(1, OFFSET_DTYPE).tobytes())
        for flat, lengths in encoder.map(batches()):
            n, nbytes, nats, scored = queued.popleft()
            bin_f.write(flat.tobytes())
            idx_f.write((np.cumsum(lengths) + stats.tokens).astype(OFFSET_DTYPE).tobytes())
            stats.documents += n
            stats.tokens += int(lengths.sum())
            stats.text_bytes += nbytes
            stats.nats += nats
            stats.scored += scored
            bar.set_postfix(docs=stats.documents, tokens=stats.tokens, refresh=False)
            _advance(bar, nbytes, stats.text_bytes, stats.documents, docs.expected)
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
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace(tmp: Path, output_dir: Path) -> None:
    """Make the complete tmp folder output_dir, moving any previous one aside and then deleting it."""
    old = None
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output_dir, old)  # a directory cannot be renamed onto a non-empty one
    try:
        os.replace(tmp, output_dir)
    except BaseException:
        if old is not None:
            os.replace(old, output_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
