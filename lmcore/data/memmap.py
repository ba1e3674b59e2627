"""Prepared corpora on disk: meta.json + per split a raw token file (.bin) and document offsets (.idx).

`{split}.bin` holds every document's token ids followed by <eos>, packed back to back, as raw
little-endian uint16 (uint32 when the vocabulary does not fit); `{split}.idx` holds D+1 uint64 start
offsets (the last is the token count). Both are memory-mapped read-only, never loaded whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmcore.errors import DataError

META_FILE = "meta.json"
FORMAT_VERSION = 1
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
OFFSET_DTYPE = np.dtype("<u8")


def token_dtype(vocab_size: int) -> str:
    """Name of the smallest token dtype that holds ids below vocab_size."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    """Read and check DIR/meta.json: format, dtype, and that every split's files match its counts."""
    data_dir = Path(data_dir)
    path = data_dir / META_FILE
    if not path.is_file():
        raise DataError(f"{data_dir}: no {META_FILE} (run the prep stage first)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: corrupt {META_FILE} ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: corrupt {META_FILE} (expected a JSON object)")
    for key in ("format_version", "dtype", "vocab_size", "splits"):
        if key not in meta:
            raise DataError(f"{path}: missing key {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {meta['format_version']!r} is not {FORMAT_VERSION} (prepare again)")
    if meta["dtype"] not in DTYPES:
        raise DataError(f"{path}: dtype {meta['dtype']!r} is not one of {', '.join(DTYPES)}")
    if not isinstance(meta["splits"], dict) or not meta["splits"]:
        raise DataError(f"{path}: 'splits' must be a non-empty object")
    itemsize = DTYPES[meta["dtype"]].itemsize
    for name, split in meta["splits"].items():
        try:
            files = [(data_dir / split["bin"], int(split["tokens"]) * itemsize, f"{split['tokens']} {meta['dtype']} tokens"),
                     (data_dir / split["offsets"], (int(split["documents"]) + 1) * OFFSET_DTYPE.itemsize,
                      f"{split['documents']} documents")]
        except (TypeError, KeyError, ValueError) as e:
            raise DataError(f"{path}: split {name!r} is incomplete ({type(e).__name__}: {e})") from None
        for file, size, what in files:
            if not file.is_file():
                raise DataError(f"{file}: missing (listed in {path})")
            if file.stat().st_size != size:
                raise DataError(f"{file}: {file.stat().st_size} bytes, but {META_FILE} says {what} ({size} bytes)")
    return meta


def _map(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:  # mmap cannot map an empty file
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


class MemmapCorpus:
    """One split of a prepared corpus, memory-mapped: token stream + document offsets."""

    def __init__(self, data_dir: str | Path, split: str, meta: dict[str, Any] | None = None) -> None:
        self.data_dir, self.split = Path(data_dir), split
        self.meta = load_meta(self.data_dir) if meta is None else meta
        if split not in self.meta["splits"]:
            raise DataError(f"{self.data_dir}: no split {split!r} (splits: {', '.join(self.meta['splits'])})")
        info = self.meta["splits"][split]
        self.num_tokens, self.num_documents = int(info["tokens"]), int(info["documents"])
        self.vocab_size = int(self.meta["vocab_size"])
        self.tokens = _map(self.data_dir / info["bin"], DTYPES[self.meta["dtype"]], self.num_tokens)
        self.offsets = _map(self.data_dir / info["offsets"], OFFSET_DTYPE, self.num_documents + 1)
        if self.num_documents and (int(self.offsets[0]) != 0 or int(self.offsets[-1]) != self.num_tokens):
            raise DataError(f"{self.data_dir / info['offsets']}: offsets do not span the {self.num_tokens} tokens")

    def __len__(self) -> int:
        return self.num_tokens

    def document(self, i: int) -> np.ndarray:
        """Tokens of document i, its trailing <eos> included (a read-only view)."""
        if not -self.num_documents <= i < self.num_documents:
            raise IndexError(f"document {i} out of range ({self.num_documents} documents)")
        i %= self.num_documents
        return self.tokens[int(self.offsets[i]):int(self.offsets[i + 1])]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle (e.g. into DataLoader workers) by path: pickling a memmap would copy the whole corpus.
        return (MemmapCorpus, (str(self.data_dir), self.split))

    def __repr__(self) -> str:
        return f"MemmapCorpus({str(self.data_dir)!r}, {self.split!r}: {self.num_documents} docs, {self.num_tokens} tokens)"


MemmapDataset = MemmapCorpus
