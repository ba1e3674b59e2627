"""Prepared corpora on disk: meta.json + per split a raw token file (.bin) and document offsets (.idx).

`{split}.bin` holds every document's token ids followed by <eos>, packed back to back, as raw
little-endian uint16 (uint32 when the vocabulary does not fit); `{split}.idx` holds D+1 uint64 start
offsets (the last is the token count). Both are memory-mapped read-only, never loaded whole. meta.json
records per split its largest token id and the .bin's sha256 (`max_token_id`, `sha256`; corpora prepared
before have neither), which lmcore/data/integrity.py checks when training starts.
MemmapCorpus gives documents and the token stream; MemmapDataset gives fixed-length training blocks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcore.errors import DataError
from lmcore.files import read_json_object

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
    meta = read_json_object(path, f"{data_dir}: no {META_FILE} (run the prep stage first)", META_FILE)
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
        if not isinstance(split.get("max_token_id", 0), int) or not isinstance(split.get("sha256", ""), str):
            raise DataError(f"{path}: split {name!r}: max_token_id must be an integer and sha256 a string")
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


class MemmapDataset(torch.utils.data.Dataset):
    """Fixed-length training blocks of one split, for a torch DataLoader (map-style, pickles by path).

    Block i is the `block_size + overlap` tokens from i * block_size on, cut from the packed stream
    (documents run into each other after <eos>, as in nanoGPT). With overlap=1 (the default) block i
    ends where block i+1 starts, so next-token inputs/targets are block[:-1] / block[1:] and every token
    is a target exactly once per epoch. block_size defaults to the max_seq_len in meta.json.
    """

    def __init__(self, data_dir: str | Path, split: str, block_size: int | None = None, overlap: int = 1) -> None:
        self.corpus = MemmapCorpus(data_dir, split)
        if block_size is None:
            block_size = self.corpus.meta.get("max_seq_len")
            if block_size is None:
                raise DataError(f"{self.corpus.data_dir}: meta.json has no max_seq_len; pass block_size")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise DataError(f"block_size: must be a positive integer, got {block_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise DataError(f"overlap: must be a non-negative integer, got {overlap!r}")
        self.block_size, self.overlap = block_size, overlap
        self.num_blocks = max(0, (self.corpus.num_tokens - overlap) // block_size)
        if self.num_blocks == 0:
            raise DataError(f"{self.corpus.data_dir} [{split}]: {self.corpus.num_tokens} tokens, fewer than one "
                            f"block of {block_size + overlap}")

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, i: int) -> torch.Tensor:
        """Block i as an int64 tensor of block_size + overlap tokens (copied out of the memmap)."""
        if not -self.num_blocks <= i < self.num_blocks:
            raise IndexError(f"block {i} out of range ({self.num_blocks} blocks)")
        start = (i % self.num_blocks) * self.block_size
        return torch.from_numpy(self.corpus.tokens[start:start + self.block_size + self.overlap].astype(np.int64))

    def __repr__(self) -> str:
        return (f"MemmapDataset({str(self.corpus.data_dir)!r}, {self.corpus.split!r}: {self.num_blocks} blocks of "
                f"{self.block_size}+{self.overlap})")
