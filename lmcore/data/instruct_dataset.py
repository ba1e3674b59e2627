"""Prepared instruction data on disk: config.json, tokenizer.json, and per split

    {split}.tokens.bin   [N, max_seq_len] token rows (uint16, uint32 for large vocabularies): prompt, response,
                         <eos>, then <pad>
    {split}.mask.bin     [N, max_seq_len] uint8 loss mask: 1 exactly on the response tokens and its <eos>
    {split}.jsonl        the examples (instruction, input, output, family, token counts), for evaluation

Rows are memory-mapped read-only, never loaded whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmcore.data.memmap import DTYPES
from lmcore.errors import DataError
from lmcore.files import read_json_object

CONFIG_FILE = "config.json"
FORMAT = "lmcore-instruct"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def load_config(data_dir: str | Path) -> dict[str, Any]:
    """Read and check DIR/config.json and that every split's files have the sizes it states."""
    data_dir = Path(data_dir)
    path = data_dir / CONFIG_FILE
    cfg = read_json_object(path, f"{data_dir}: no {CONFIG_FILE} (run stages/prep_instruct.py first)", CONFIG_FILE)
    if cfg.get("format") != FORMAT:
        raise DataError(f"{path}: not prepared instruction data (format {FORMAT!r} expected)")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {cfg.get('format_version')!r} is not {FORMAT_VERSION} (prepare again)")
    if cfg.get("dtype") not in DTYPES:
        raise DataError(f"{path}: dtype {cfg.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    width = int(cfg["max_seq_len"])
    for name, split in cfg["splits"].items():
        n = int(split["examples"])
        for key, itemsize in (("tokens", DTYPES[cfg["dtype"]].itemsize), ("loss_mask", 1)):
            file = data_dir / split[key]
            if not file.is_file():
                raise DataError(f"{file}: missing (listed in {path})")
            if file.stat().st_size != n * width * itemsize:
                raise DataError(f"{file}: {file.stat().st_size} bytes, but {CONFIG_FILE} says {n} rows of {width}")
    return cfg


class InstructSplit:
    """One split of prepared instruction data: memory-mapped token rows and loss masks, and its examples."""

    def __init__(self, data_dir: str | Path, split: str, cfg: dict[str, Any] | None = None) -> None:
        self.data_dir, self.split = Path(data_dir), split
        self.cfg = load_config(data_dir) if cfg is None else cfg
        if split not in self.cfg["splits"]:
            raise DataError(f"{self.data_dir}: no split {split!r} (splits: {', '.join(self.cfg['splits'])})")
        info = self.cfg["splits"][split]
        self.num_rows, self.width = int(info["examples"]), int(self.cfg["max_seq_len"])
        shape = (self.num_rows, self.width)
        if self.num_rows:
            self.tokens = np.memmap(self.data_dir / info["tokens"], DTYPES[self.cfg["dtype"]], "r", shape=shape)
            self.mask = np.memmap(self.data_dir / info["loss_mask"], np.uint8, "r", shape=shape)
        else:  # mmap cannot map an empty file
            self.tokens = np.zeros(shape, DTYPES[self.cfg["dtype"]])
            self.mask = np.zeros(shape, np.uint8)
        self.examples_file = self.data_dir / info["examples_file"]

    def __len__(self) -> int:
        return self.num_rows

    def rows(self, index: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int64 [n, width], loss mask uint8 [n, width]) of the given rows, copied out of the memmap."""
        index = np.asarray(index, dtype=np.int64)
        return self.tokens[index].astype(np.int64), np.array(self.mask[index])

    def examples(self) -> list[dict[str, Any]]:
        """The split's examples in row order (instruction, input, output, family, prompt_tokens, ...)."""
        with open(self.examples_file, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
