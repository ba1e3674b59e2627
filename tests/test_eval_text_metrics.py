"""Text metrics on examples small enough to check by hand."""

from __future__ import annotations

import math

import pytest

from lmcore.eval.text_metrics import (
    distinct_n,
    mean_length,
    proper_ending_fraction,
    repeated_ngram_rate,
    self_bleu4,
    text_metrics,
    unigram_entropy,
    words,
)


def test_words_split_punctuation_like_bleu():
    assert words('Hi, there. "Yes!"') == ["Hi", ",", "there", ".", '"', "Yes", "!", '"']


def test_self_bleu_by_hand():
    # One substitution in five words: n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (no brevity penalty),
    # so BLEU = (0.8 * 0.75 * 2/3 * 0.5) ** (1/4) = 0.2 ** 0.25 for each sample against the other.
    assert self_bleu4(["a b c d e", "a b c d f"]) == pytest.approx(100 * 0.2**0.25)
    assert self_bleu4(["the cat sat on the mat"] * 3) == pytest.approx(100.0)
    assert self_bleu4(["a b c d e", "v w x y z"]) == pytest.approx(0.0)
    assert self_bleu4(["only one"]) is None


def test_distinct_n_by_hand():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)  # {a, b} of 4 words
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # {ab, ba} of ab ba ab
    assert distinct_n(["a b a b"], 3) == pytest.approx(1.0)  # aba, bab
    assert distinct_n(["a b", "a b"], 1) == pytest.approx(2 / 4)  # pooled over samples
    assert distinct_n(["a"], 2) is None


def test_repeated_4gram_rate_by_hand():
    # abcd bcda cdab dabc abcd: one of five 4-grams repeats an earlier one
    assert repeated_ngram_rate(["a b c d a b c d"]) == pytest.approx(1 / 5)
    assert repeated_ngram_rate(["a b c d e"]) == 0.0
    # pooled: 1 repeat out of 5 + 2 four-grams
    assert repeated_ngram_rate(["a b c d a b c d", "a b c d e"]) == pytest.approx(1 / 7)
    # a repeat in another sample is not a repeat within a sample
    assert repeated_ngram_rate(["a b c d", "a b c d"]) == 0.0


def test_mean_length_and_proper_endings():
    assert mean_length(["a b", "a b c d"]) == pytest.approx(3.0)
    assert mean_length(["Hi, there."]) == pytest.approx(4.0)
    texts = ["It ended.", "It did not", "Cut here.", 'She said "yes!"']
    # the 1st and 4th ended with <eos> after a finished sentence; the 3rd looks finished but hit the length limit
    assert proper_ending_fraction(texts, [True, True, False, True]) == pytest.approx(2 / 4)


def test_unigram_entropy_by_hand():
    assert unigram_entropy([[1, 1, 2, 2]]) == pytest.approx(math.log(2))
    assert unigram_entropy([[5, 5, 5]]) == pytest.approx(0.0)
    assert unigram_entropy([[1, 2, 3, 4], [7, 7]]) == pytest.approx(math.log(4) / 2)


def test_repetitive_text_scores_worse_on_every_diversity_metric():
    varied = [
        "Lily found a red ball in the park.",
        "Tom saw a fox by the river and waved.",
        "The cat slept in the sun all day long.",
    ]
    loop = ["the ball the ball the ball the ball the ball"] * 3
    m_varied = text_metrics(varied, [[i, i + 1, i + 2, i + 3] for i in range(3)], [True] * 3)
    m_loop = text_metrics(loop, [[9, 8, 9, 8]] * 3, [False] * 3)
    assert m_loop["self_bleu4"] > m_varied["self_bleu4"]
    assert m_loop["distinct_2"] < m_varied["distinct_2"]
    assert m_loop["repeated_4gram_rate"] > m_varied["repeated_4gram_rate"] == 0.0
    assert m_loop["unigram_entropy"] < m_varied["unigram_entropy"]
    assert m_loop["proper_ending_fraction"] == 0.0 and m_varied["proper_ending_fraction"] == 1.0
    assert m_varied["mean_length_tokens"] == 4.0 and m_varied["eos_fraction"] == 1.0
