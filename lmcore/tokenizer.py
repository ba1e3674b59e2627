"""Byte-level BPE tokenizer (HF `tokenizers`) with the project's fixed special-token ids.

Text is always encoded literally: a document that contains the string "<eos>" gets the bytes of
"<eos>", never the id EOS_ID. Special ids are inserted by code (prepare, samplers, objectives),
so no corpus can forge them and decode(encode(x)) == x holds for every string.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmcore.errors import DataError

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>", "<ignore>"]
PAD_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID, IGNORE_ID = range(len(SPECIAL_TOKENS))
TOKENIZER_FILE = "tokenizer.json"
# Every byte must be a token of its own or byte-level BPE cannot encode arbitrary text.
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


def check_vocab_size(vocab_size: Any) -> int:
    """Validate a requested vocabulary size (special tokens + 256 bytes + at least one merge)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= MIN_VOCAB_SIZE:
        raise DataError(
            f"vocab_size: must be an integer above {MIN_VOCAB_SIZE} "
            f"({len(SPECIAL_TOKENS)} special tokens + 256 bytes), got {vocab_size!r}"
        )
    return vocab_size


def _literal(tok: Tokenizer) -> Tokenizer:
    # Not stored in tokenizer.json, so it is set on every tokenizer this module hands out.
    tok.encode_special_tokens = True
    return tok


def _check_special_ids(tok: Tokenizer, where: str) -> None:
    for expected, token in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(token)
        if got != expected:
            raise DataError(f"{where}: special token {token} has id {got}, expected {expected}")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer on `texts`; special tokens get ids 0..5."""
    check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,  # first, so they take ids 0..5
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    _check_special_ids(tok, "trained tokenizer")
    return _literal(tok)


def tokenizer_from_str(data: str, where: str = "tokenizer") -> Tokenizer:
    """Rebuild a tokenizer from its JSON string (as written by save_tokenizer)."""
    try:
        tok = Tokenizer.from_str(data)
    except Exception as e:  # tokenizers raises plain Exception subclasses for any parse error
        raise DataError(f"{where}: not a valid tokenizer.json ({str(e).splitlines()[0] if str(e) else e!r})") from None
    _check_special_ids(tok, where)
    return _literal(tok)


def save_tokenizer(tok: Tokenizer, output_dir: Path) -> Path:
    """Write `tok` as output_dir/tokenizer.json and return that path."""
    path = Path(output_dir) / TOKENIZER_FILE
    tok.save(str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load tokenizer.json (or DIR/tokenizer.json) and check the fixed special-token ids."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file not found")
    try:
        data = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read tokenizer ({e})") from None
    return tokenizer_from_str(data, str(path))


def tokenizer_identity(tok: Tokenizer) -> dict[str, Any]:
    """Vocabulary size and a hash of everything that decides token ids, to pair checkpoints with data."""
    spec = json.loads(tok.to_str())
    # Padding/truncation are runtime settings, not part of the vocabulary: leave them out of the hash.
    spec.pop("padding", None)
    spec.pop("truncation", None)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"vocab_size": tok.get_vocab_size(), "sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest()}


def encode_documents(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without any special token added."""
    # encode_batch_fast skips offset tracking, which we never use (tokenizers >= 0.20).
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=False)]


def decode(tok: Tokenizer, ids: Sequence[int] | Any, stop_at_eos: bool = True) -> str:
    """Text of `ids` (list, array or tensor) without special tokens, cut at the first <eos> if asked."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = [int(i) for i in ids]
    if stop_at_eos and EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    # Ids past the tokenizer's vocabulary can come from a model whose output layer is padded.
    vocab = tok.get_vocab_size()
    return tok.decode([i for i in ids if len(SPECIAL_TOKENS) <= i < vocab], skip_special_tokens=True)
