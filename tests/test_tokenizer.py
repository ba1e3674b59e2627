"""Tokenizer: fixed special ids, lossless round trip, identity, load errors."""

from __future__ import annotations

import json

import pytest
import torch

from lmcore.errors import DataError
from lmcore.tokenizer import (
    EOS_ID,
    IGNORE_ID,
    MASK_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    decode,
    encode_documents,
    load_tokenizer,
    save_tokenizer,
    tokenizer_identity,
    train_tokenizer,
)

CORPUS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "Tom had a dog named Spot. Spot liked to chase butterflies in the park.",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🙂🚀, Ελληνικά, русский текст.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 400)


def test_special_ids_are_fixed(tok):
    assert SPECIAL_TOKENS == ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>", "<ignore>"]
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
    assert (PAD_ID, EOS_ID, MASK_ID, IGNORE_ID) == (0, 2, 3, 5)
    assert tok.get_vocab_size() <= 400


@pytest.mark.parametrize(
    "text",
    [
        "Once upon a time, there was a little girl.",
        "  leading and trailing spaces  \n\nand blank lines\n",
        "Ünïcödé 日本語 🙂 — text never seen in training: ΩΨ ∮ 𝔘𝔫𝔦",
        "literal special tokens stay text: <eos> <mask> <pad> <|endoftext|>",
        "",
    ],
)
def test_round_trip(tok, text):
    ids = encode_documents(tok, [text])[0]
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)  # text can never forge a special id
    assert decode(tok, ids) == text


def test_decode_drops_specials_and_stops_at_eos(tok):
    a, b = encode_documents(tok, ["Tom had a dog", " named Spot."])
    ids = [0, 1] + a + [MASK_ID, IGNORE_ID] + [EOS_ID] + b
    assert decode(tok, ids) == "Tom had a dog"
    assert decode(tok, ids, stop_at_eos=False) == "Tom had a dog named Spot."
    assert decode(tok, torch.tensor(a + [EOS_ID])) == "Tom had a dog"
    assert decode(tok, a + [10_000]) == "Tom had a dog"  # ids past the vocabulary (padded model head)


def test_identity(tok, tmp_path):
    ident = tokenizer_identity(tok)
    assert ident["vocab_size"] == tok.get_vocab_size() and len(ident["sha256"]) == 64
    assert tokenizer_identity(train_tokenizer(CORPUS, 400)) == ident  # training is deterministic
    assert tokenizer_identity(train_tokenizer(CORPUS[:1] * 50, 400))["sha256"] != ident["sha256"]
    save_tokenizer(tok, tmp_path)
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert tokenizer_identity(loaded) == ident
    assert tokenizer_identity(load_tokenizer(tmp_path)) == ident  # a folder means its tokenizer.json
    assert encode_documents(loaded, ["a <eos> b"]) == encode_documents(tok, ["a <eos> b"])


@pytest.mark.parametrize("size", [0, 262, "512", None])
def test_bad_vocab_size(size):
    with pytest.raises(DataError, match="vocab_size"):
        train_tokenizer(CORPUS, size)


def test_load_errors(tok, tmp_path):
    with pytest.raises(DataError, match="missing.json: tokenizer file not found"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a valid tokenizer.json"):
        load_tokenizer(bad)
    # A tokenizer whose special tokens sit elsewhere would silently mean different ids.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    eos, mask = vocab["<eos>"], vocab["<mask>"]
    vocab["<eos>"], vocab["<mask>"] = mask, eos
    for t in spec["added_tokens"]:
        t["id"] = {eos: mask, mask: eos}.get(t["id"], t["id"])
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps(spec))
    with pytest.raises(DataError, match="swapped.json: special token <eos> has id 3, expected 2"):
        load_tokenizer(swapped)
