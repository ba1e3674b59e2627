"""Validity rate: real stories are valid, repetitive or broken ones are not, also after sampling and decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmcore.data.builtin_stories import story
from lmcore.eval.generation import generate, split_row
from lmcore.eval.validity import applies, story_logprob, validity
from lmcore.tokenizer import EOS_ID, IGNORE_ID, PAD_ID, encode_documents, load_tokenizer


def test_a_story_of_the_grammar_is_valid_with_its_exact_logprob():
    s = story(1234, 7)
    assert story_logprob(s.text) == pytest.approx(s.logprob)
    assert validity([s.text])["validity_rate"] == 1.0


def test_repetition_truncation_and_inconsistency_are_invalid():
    text = story(1234, 3).text
    first, second = text.split(". ")[:2]
    first += "."
    repeated_sentence = text.replace(f"{second}. ", f"{second}. {second}. ", 1)  # one sentence said twice
    assert repeated_sentence != text
    looped = " ".join([first] * 6)  # the collapse seen in degenerate samplers
    twice = text + "\n" + text
    cut = text[: len(text) // 2]
    name = text.split("named ")[1].split(".")[0]
    other = "Tom" if name != "Tom" else "Ben"
    renamed = text.replace(f"{name} ", f"{other} ", 1)  # the main character changes name mid-story
    for bad in (repeated_sentence, looped, twice, cut, text + " ", renamed):
        assert story_logprob(bad) is None, bad[:80]
    summary = validity([text, looped, cut, story(1234, 4).text], entropy_per_story=43.0)
    assert summary["validity_rate"] == pytest.approx(0.5) and summary["valid"] == 2
    expected = -(story_logprob(text) + story_logprob(story(1234, 4).text)) / 2
    assert summary["grammar_nll_per_valid_story"] == pytest.approx(expected)
    assert summary["corpus_entropy_per_story"] == 43.0


def test_applies_only_to_the_story_corpus():
    assert applies({"source": "builtin:stories"})
    assert not applies({"source": "hf:roneneldan/TinyStories"}) and not applies({})


class _Fixed:
    """A stand-in objective whose sampler returns fixed rows, to test what happens between sampler and metric."""

    def __init__(self, rows: torch.Tensor, extra_tokens: int) -> None:
        self.rows, self.extra_tokens, self.cfg = rows, extra_tokens, SimpleNamespace()

    def sample(self, model, num, length, gen, **kw):
        return self.rows[:num]


def test_sampled_rows_decode_to_valid_stories(corpus):
    tok = load_tokenizer(corpus)
    texts = [story(99, i).text for i in range(2)]
    ids = encode_documents(tok, texts)
    length = max(map(len, ids)) + 4
    # AR pads with <pad> after <eos>; diffusion/SDD write <ignore> after <eos>; a third row never ends.
    rows = torch.full((3, length), PAD_ID)
    rows[0, : len(ids[0])] = torch.tensor(ids[0])
    rows[0, len(ids[0])] = EOS_ID
    rows[1, : len(ids[1])] = torch.tensor(ids[1])
    rows[1, len(ids[1])] = EOS_ID
    rows[1, len(ids[1]) + 1 :] = IGNORE_ID
    rows[2] = torch.tensor((ids[0] * 3)[:length])
    loaded = SimpleNamespace(
        objective=_Fixed(rows, 0),
        model=None,
        device=torch.device("cpu"),
        autocast=lambda: torch.autocast("cpu", enabled=False),
    )
    samples, timing = generate(loaded, tok, 3, length, batch_size=3)
    assert [s.text for s in samples[:2]] == texts
    assert [s.ended for s in samples] == [True, True, False]
    assert validity([s.text for s in samples])["validity_rate"] == pytest.approx(2 / 3)
    assert timing["tokens"] == len(ids[0]) + len(ids[1]) + 2 + length
    assert split_row([7, 8, IGNORE_ID, 9], 1) == ([8], False)
