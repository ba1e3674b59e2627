"""Prepare instruction data: template → tokens with the pretrained model's tokenizer → response-only loss masks →
a seeded train/val/test split as memory-mapped rows (format in instruct_dataset.py), written atomically.

Prompt and response are tokenised separately and concatenated, so the mask boundary is exact by construction:
row = prompt ids + response ids + <eos>, mask = 0 on the prompt, 1 on the response and <eos>, then <pad>/0.
An example longer than max_seq_len keeps its prompt and loses the end of its response (no <eos>: the answer did
not end there) with overflow="truncate", or is left out with overflow="drop"; both are counted. Duplicates of an
(instruction, input) pair are left out so that no test prompt is also a training prompt.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer

from lmcore.data.instruct_dataset import CONFIG_FILE, FORMAT, FORMAT_VERSION, SPLITS
from lmcore.data.instruct_sources import SourceStats
from lmcore.data.instruct_template import Example, format_example
from lmcore.data.memmap import token_dtype
from lmcore.errors import CheckpointError, DataError
from lmcore.files import replace_dir
from lmcore.tokenizer import EOS_ID, PAD_ID, TOKENIZER_FILE, encode_documents, load_tokenizer, save_tokenizer, \
    tokenizer_identity

OVERFLOW = ("truncate", "drop")
_CHUNK = 512  # examples tokenised per call


def resolve_tokenizer(tokenizer: str | Path | None, pretrained_checkpoint: str | Path | None
                      ) -> tuple[Tokenizer, dict[str, Any]]:
    """The tokenizer to use and facts to record; it must match the checkpoint's `tokenizer` identity.

    With only a checkpoint, its tokenizer is found in the data folder it was trained on (its `data_dir`)."""
    ckpt_identity, facts = None, {}
    if pretrained_checkpoint:
        from lmcore.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(pretrained_checkpoint)
        ckpt_identity = ckpt.get("tokenizer")
        facts.update(pretrained_checkpoint=str(pretrained_checkpoint), architecture=ckpt.get("architecture"))
        if tokenizer is None:
            if not ckpt.get("data_dir"):
                raise CheckpointError(f"{pretrained_checkpoint}: records no data_dir; pass --tokenizer")
            tokenizer = ckpt["data_dir"]
    if tokenizer is None:
        raise DataError("tokenizer: pass --tokenizer PATH or --pretrained_checkpoint PATH")
    tok = load_tokenizer(tokenizer)
    identity = tokenizer_identity(tok)
    if ckpt_identity and ckpt_identity.get("sha256") != identity["sha256"]:
        raise CheckpointError(
            f"{pretrained_checkpoint}: its tokenizer (vocab {ckpt_identity.get('vocab_size')}, sha256 "
            f"{str(ckpt_identity.get('sha256'))[:12]}) is not {tokenizer} (vocab {identity['vocab_size']}, sha256 "
            f"{identity['sha256'][:12]}): instruction data must be tokenised with the model's own tokenizer")
    facts["tokenizer_source"] = str(tokenizer)
    return tok, {**facts, "tokenizer_identity": identity}


def _encoded(tok: Tokenizer, examples: Iterator[Example]) -> Iterator[tuple[Example, list[int], list[int]]]:
    """(example, prompt ids, response ids), tokenised in chunks."""
    while chunk := list(itertools.islice(examples, _CHUNK)):
        pairs = [format_example(e) for e in chunk]
        prompts = encode_documents(tok, [p for p, _ in pairs])
        responses = encode_documents(tok, [r for _, r in pairs])
        yield from zip(chunk, prompts, responses)


def select_rows(tok: Tokenizer, examples: Iterable[Example], max_seq_len: int, num_examples: int | None,
                overflow: str, counts: dict[str, int]) -> list[tuple[Example, list[int], int, bool]]:
    """Up to num_examples (all when None) kept rows: (example, row ids, prompt length, truncated)."""
    if overflow not in OVERFLOW:
        raise DataError(f"overflow: must be one of {', '.join(OVERFLOW)}, got {overflow!r}")
    kept, seen = [], set()
    # Generated sources are endless: give up when distinct examples run out (e.g. one small family).
    budget = None if num_examples is None else 20 * num_examples + 1000
    for e, p_ids, r_ids in _encoded(tok, iter(examples)):
        counts["considered"] += 1
        key = (e.instruction, e.input)
        if key in seen:
            counts["duplicates"] += 1
        elif len(p_ids) >= max_seq_len:
            counts["dropped_prompt_too_long"] += 1
        elif len(p_ids) + len(r_ids) + 1 > max_seq_len and overflow == "drop":
            counts["dropped_too_long"] += 1
        else:
            seen.add(key)
            truncated = len(p_ids) + len(r_ids) + 1 > max_seq_len
            row = p_ids + (r_ids[: max_seq_len - len(p_ids)] if truncated else r_ids + [EOS_ID])
            counts["truncated"] += truncated
            kept.append((e, row, len(p_ids), truncated))
            if num_examples is not None and len(kept) == num_examples:
                break
        if budget is not None and counts["considered"] >= budget:
            raise DataError(f"source: only {len(kept)} usable distinct examples in the first {budget} (asked for "
                            f"{num_examples}; {counts['duplicates']} duplicates, {counts['dropped_prompt_too_long']} "
                            f"prompts ≥ max_seq_len {max_seq_len}); lower --num_examples or raise --max_seq_len")
    return kept


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded split of range(n): test and val get round(n·fraction) rows (at least 1 when the fraction is > 0)."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise DataError(f"{name}: must be in [0, 1), got {f}")
    sizes = [max(1, round(n * f)) if f > 0 else 0 for f in (test_fraction, val_fraction)]
    if n - sum(sizes) < 1:
        raise DataError(f"split: {n} examples cannot fill test ({sizes[0]}), val ({sizes[1]}) and a train split")
    perm = np.random.default_rng([seed, 7]).permutation(n)
    test, val = perm[: sizes[0]], perm[sizes[0]: sum(sizes)]
    return {"train": np.sort(perm[sum(sizes):]), "val": np.sort(val), "test": np.sort(test)}


def _write_split(tmp: Path, split: str, rows: list[tuple[Example, list[int], int, bool]], width: int,
                 dtype: str) -> dict[str, Any]:
    tokens = np.full((len(rows), width), PAD_ID, dtype=np.dtype(dtype).newbyteorder("<"))
    mask = np.zeros((len(rows), width), dtype=np.uint8)
    with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for i, (e, row, plen, truncated) in enumerate(rows):
            tokens[i, : len(row)] = row
            mask[i, plen: len(row)] = 1
            rec = {**e.to_dict(), "prompt_tokens": plen, "response_tokens": len(row) - plen, "truncated": truncated}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tokens.tofile(tmp / f"{split}.tokens.bin")
    mask.tofile(tmp / f"{split}.mask.bin")
    families: dict[str, int] = {}
    for e, *_ in rows:
        families[e.family or "none"] = families.get(e.family or "none", 0) + 1
    return {"examples": len(rows), "tokens": f"{split}.tokens.bin", "loss_mask": f"{split}.mask.bin",
            "examples_file": f"{split}.jsonl", "families": dict(sorted(families.items())),
            "response_tokens": int(mask.sum())}


def prepare_instructions(examples: Iterable[Example], tok: Tokenizer, output_dir: str | Path, *, max_seq_len: int,
                         num_examples: int | None, val_fraction: float = 0.05, test_fraction: float = 0.05,
                         seed: int = 1234, overflow: str = "truncate", facts: dict[str, Any] | None = None,
                         stats: SourceStats | None = None) -> dict[str, Any]:
    """Tokenise, mask, split and write `examples` to output_dir; returns the config.json it wrote."""
    if max_seq_len < 8:
        raise DataError(f"max_seq_len: must be at least 8, got {max_seq_len}")
    if num_examples is not None and num_examples < 3:
        raise DataError(f"num_examples: must be at least 3 (train, val and test), got {num_examples}")
    counts = dict.fromkeys(("considered", "duplicates", "truncated", "dropped_too_long", "dropped_prompt_too_long"), 0)
    kept = select_rows(tok, examples, max_seq_len, num_examples, overflow, counts)
    if not kept:
        raise DataError("source: no usable examples (every one was bad, a duplicate or too long)")
    parts = split_indices(len(kept), val_fraction, test_fraction, seed)
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        dtype = token_dtype(tok.get_vocab_size())
        splits = {s: _write_split(tmp, s, [kept[i] for i in parts[s]], max_seq_len, dtype) for s in SPLITS}
        save_tokenizer(tok, tmp)
        stats = stats or SourceStats()
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "template": "alpaca",
            "max_seq_len": max_seq_len, "dtype": dtype, "vocab_size": tok.get_vocab_size(),
            "tokenizer": TOKENIZER_FILE, **(facts or {}),
            "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction, "overflow": overflow,
            "counts": {"records_read": stats.read, "bad_records_skipped": stats.bad, **counts, "kept": len(kept)},
            "bad_record_examples": stats.messages,
            "splits": splits,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return config
