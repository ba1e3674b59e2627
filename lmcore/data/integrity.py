"""Integrity of prepared token files: every id fits the model's vocabulary, and the files are the ones prepared.

prepare_corpus records per split the largest token id and the sha256 of `{split}.bin` in meta.json, computed
while writing (no extra pass). When training starts the recorded maximum is compared with the vocabulary, so a
run pays nothing for it, per step or up front. A corpus prepared before these were recorded, or a `.bin` written
after its meta.json (edited by hand, or restored by a tool that sets new times), is read once instead: memory-
mapped, in chunks, for its maximum and its checksum. Without this an id ≥ vocabulary size surfaces as an
IndexError deep inside the embedding.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from lmcore.data.memmap import DTYPES, META_FILE
from lmcore.errors import DataError

CHUNK_TOKENS = 1 << 24  # tokens per read (32-64 MB): memory stays bounded on any corpus


def scan_tokens(path: Path, dtype: np.dtype, count: int) -> tuple[int, str]:
    """(largest token id or -1 when empty, sha256 of the file's bytes) of a raw token file, read in chunks."""
    digest, top = hashlib.sha256(), -1
    if count:  # mmap cannot map an empty file
        tokens = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
        for start in range(0, count, CHUNK_TOKENS):
            chunk = tokens[start:start + CHUNK_TOKENS]
            top = max(top, int(chunk.max()))
            digest.update(chunk)
    return top, digest.hexdigest()


def check_ids_fit(path: Path, top: int, vocab_size: int, what: str) -> None:
    """Refuse token files holding an id the model has no embedding for."""
    if top >= vocab_size:
        raise DataError(f"{path}: token id {top} is outside the vocabulary of {vocab_size} ({what}); "
                        f"prepare the data again with the tokenizer it is meant for")


def check_corpus_ids(data_dir: str | Path, meta: dict[str, Any], vocab_size: int) -> None:
    """Every split of a prepared corpus must hold ids below vocab_size and match its recorded checksum."""
    data_dir = Path(data_dir)
    meta_time = (data_dir / META_FILE).stat().st_mtime_ns
    for split in meta["splits"].values():
        path = data_dir / split["bin"]
        recorded, digest = split.get("max_token_id"), split.get("sha256")
        what = f"meta.json vocab_size {meta['vocab_size']}"
        if recorded is not None and digest and path.stat().st_mtime_ns <= meta_time:
            check_ids_fit(path, int(recorded), vocab_size, what)
            continue
        top, actual = scan_tokens(path, DTYPES[meta["dtype"]], int(split["tokens"]))
        check_ids_fit(path, top, vocab_size, what)
        if digest and actual != digest:
            raise DataError(f"{path}: changed since the corpus was prepared (sha256 {actual[:12]}…, meta.json "
                            f"records {digest[:12]}…); prepare the corpus again")


def corpus_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies a prepared corpus' contents (per split: tokens, documents and, when recorded, sha256)."""
    keys = ("tokens", "documents", "sha256")
    return {name: {k: split[k] for k in keys if k in split} for name, split in meta["splits"].items()}


def check_instruct_ids(data_dir: str | Path, data: dict[str, Any], vocab_size: int) -> None:
    """Every stored instruction row's ids must fit the model (instruction data is small: read once, in chunks)."""
    for split in data["splits"].values():
        path = Path(data_dir) / split["tokens"]
        top, _ = scan_tokens(path, DTYPES[data["dtype"]], int(split["examples"]) * int(data["max_seq_len"]))
        check_ids_fit(path, top, vocab_size, "the pretrained model's vocabulary")


def instruct_identity(data: dict[str, Any]) -> dict[str, Any]:
    """What identifies prepared instruction data (its source, seed, row width and split sizes)."""
    return {"source": data.get("source"), "seed": data.get("seed"), "max_seq_len": data.get("max_seq_len"),
            **{name: {"examples": split["examples"]} for name, split in data["splits"].items()}}
