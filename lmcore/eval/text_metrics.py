"""Text-quality statistics of a set of samples: Self-BLEU-4 (sacrebleu), distinct-n, repeated 4-grams, length,
proper endings and unigram entropy. Words are sacrebleu's 13a tokens, so every metric splits text the same way."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

_TOKENIZE = Tokenizer13a()
# Self-BLEU is quadratic in the number of samples; beyond this many the first ones stand for the set.
SELF_BLEU_MAX_SAMPLES = 200
SENTENCE_END = (".", "!", "?", '"', "'", ")")


def words(text: str) -> list[str]:
    """Words and punctuation of `text` as BLEU sees them (sacrebleu's 13a tokenizer)."""
    return _TOKENIZE(text).split()


def self_bleu4(texts: Sequence[str]) -> float | None:
    """Mean sentence BLEU-4 (0–100) of each sample against all the others as references (Zhu et al. 2018,
    Texygen); high = the samples resemble each other. None with fewer than two samples."""
    texts = list(texts)[:SELF_BLEU_MAX_SAMPLES]
    if len(texts) < 2:
        return None
    bleu = BLEU(effective_order=True)  # sacrebleu's sentence-level defaults (exp smoothing)
    scores = [bleu.sentence_score(t, texts[:i] + texts[i + 1 :]).score for i, t in enumerate(texts)]
    return sum(scores) / len(scores)


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams over all n-grams of all samples (Li et al. 2016); None when there are none."""
    grams = [g for t in texts for g in _ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_rate(texts: Sequence[str], n: int = 4) -> float | None:
    """Share of n-grams that repeat an n-gram seen earlier in the same sample, pooled over samples."""
    total = repeats = 0
    for t in texts:
        grams = _ngrams(words(t), n)
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return repeats / total if total else None


def mean_length(texts: Sequence[str]) -> float | None:
    """Mean number of words per sample."""
    return sum(len(words(t)) for t in texts) / len(texts) if texts else None


def proper_ending_fraction(texts: Sequence[str], ended: Sequence[bool]) -> float | None:
    """Share of samples that stopped by themselves (emitted <eos>) right after a finished sentence."""
    if not texts:
        return None
    ok = sum(1 for t, e in zip(texts, ended) if e and t.rstrip().endswith(SENTENCE_END))
    return ok / len(texts)


def unigram_entropy(token_lists: Sequence[Sequence[int]]) -> float | None:
    """Mean over samples of the entropy (nats) of each sample's own token distribution; low = repetitive."""
    values = []
    for toks in token_lists:
        if not toks:
            values.append(0.0)
            continue
        counts, n = Counter(toks), len(toks)
        values.append(-sum(c / n * math.log(c / n) for c in counts.values()))
    return sum(values) / len(values) if values else None


def text_metrics(texts: Sequence[str], token_lists: Sequence[Sequence[int]], ended: Sequence[bool]) -> dict[str, float]:
    """Every text statistic of one sample set (keys absent where undefined, e.g. Self-BLEU of one sample)."""
    out = {
        "self_bleu4": self_bleu4(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "repeated_4gram_rate": repeated_ngram_rate(texts, 4),
        "mean_length_words": mean_length(texts),
        "mean_length_tokens": sum(len(t) for t in token_lists) / len(token_lists) if token_lists else None,
        "eos_fraction": sum(map(bool, ended)) / len(ended) if ended else None,
        "proper_ending_fraction": proper_ending_fraction(texts, ended),
        "unigram_entropy": unigram_entropy(token_lists),
    }
    return {k: v for k, v in out.items() if v is not None}


TEXT_KINDS = {
    "self_bleu4": "sample_statistic",
    "distinct_1": "sample_statistic",
    "distinct_2": "sample_statistic",
    "distinct_3": "sample_statistic",
    "repeated_4gram_rate": "sample_statistic",
    "mean_length_words": "sample_statistic",
    "mean_length_tokens": "sample_statistic",
    "eos_fraction": "sample_statistic",
    "proper_ending_fraction": "sample_statistic",
    "unigram_entropy": "sample_statistic",
}
