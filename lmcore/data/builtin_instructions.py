"""`builtin:instructions`: seeded instruction tasks over the built-in story vocabulary with exactly checkable answers.

Each example records its task family, so evaluation reports exact-match accuracy per family:

    copy        repeat a list of words              reverse   the list backwards
    sort        the list in alphabetical order      count     how many words the list has
    arithmetic  a small sum or difference           uppercase the words in upper case
    character   the main character of a short story (the first paragraph of a builtin story)
    animal      the pet animal in such a story

Example i depends only on (seed, i); families take turns, so every family has the same share.
"""
from __future__ import annotations

import functools
import itertools
import random
import re
from typing import Iterator

from lmcore.data import builtin_stories
from lmcore.data.instruct_template import Example
from lmcore.errors import DataError

FAMILIES = ("copy", "reverse", "sort", "count", "arithmetic", "uppercase", "character", "animal")
INSTRUCTIONS = {
    "copy": "Repeat the words exactly.",
    "reverse": "Write the words in reverse order.",
    "sort": "Sort the words in alphabetical order.",
    "count": "How many words are in the list?",
    "arithmetic": "Compute the result.",
    "uppercase": "Write the words in upper case.",
    "character": "What is the name of the main character?",
    "animal": "What animal is the pet in the story?",
}
_PET = re.compile(r"\b(?:He|She) had an? (?:\w+ )?(\w+) named ")
_MAIN = re.compile(r"\bnamed (\w+)\.")


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Lower-case words (3+ letters) of the story grammar, read off a fixed set of its stories."""
    words: set[str] = set()
    for i in range(300):
        words |= set(re.findall(r"\b[a-z]{3,}\b", builtin_stories.story(0, i).text))
    return tuple(sorted(words))


def parse_families(families: str | None) -> tuple[str, ...]:
    """'copy,count' → ('copy', 'count'); None/'' → every family; unknown names are a DataError."""
    if not families:
        return FAMILIES
    names = tuple(dict.fromkeys(f.strip() for f in families.split(",") if f.strip()))
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        raise DataError(f"families: unknown '{unknown[0] if unknown else families}' (known: {','.join(FAMILIES)})")
    return names


def _words(rng: random.Random, lo: int, hi: int) -> list[str]:
    return rng.sample(vocabulary(), rng.randint(lo, hi))


def _paragraph(seed: int, rng: random.Random, need_pet: bool) -> tuple[str, str, str | None]:
    """(first paragraph of a builtin story, main character, pet animal or None)."""
    while True:
        text = builtin_stories.story(seed, rng.randrange(1 << 40)).text.split("\n", 1)[0]
        pet = _PET.search(text)
        if pet or not need_pet:
            return text, _MAIN.search(text).group(1), pet.group(1) if pet else None


def make_example(seed: int, index: int, family: str) -> Example:
    """Example `index` of family `family` (a pure function of its arguments)."""
    rng = random.Random(f"builtin-instructions:{seed}:{index}:{family}")
    if family in ("copy", "reverse", "sort", "count", "uppercase"):
        words = _words(rng, 1, 4) if family == "uppercase" else _words(rng, 2, 6)
        output = {"copy": lambda w: " ".join(w), "reverse": lambda w: " ".join(reversed(w)),
                  "sort": lambda w: " ".join(sorted(w)), "count": lambda w: str(len(w)),
                  "uppercase": lambda w: " ".join(w).upper()}[family](words)
        return Example(INSTRUCTIONS[family], " ".join(words), output, family, f"builtin:instructions #{index}")
    if family == "arithmetic":
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if rng.random() < 0.5:
            text, value = f"{a} + {b}", a + b
        else:
            a, b = max(a, b), min(a, b)  # differences stay non-negative
            text, value = f"{a} - {b}", a - b
        return Example(INSTRUCTIONS[family], text, str(value), family, f"builtin:instructions #{index}")
    story, main, pet = _paragraph(seed, rng, need_pet=family == "animal")
    answer = pet if family == "animal" else main
    return Example(INSTRUCTIONS[family], story, answer, family, f"builtin:instructions #{index}")


def builtin_examples(seed: int, families: str | None = None, start: int = 0) -> Iterator[Example]:
    """Examples start, start+1, ... without end; the families take turns."""
    names = parse_families(families)
    for index in itertools.count(start):
        yield make_example(seed, index, names[index % len(names)])


def exact_match(prediction: str, reference: str) -> bool:
    """The answer is exactly the reference, up to surrounding whitespace."""
    return prediction.strip() == reference.strip()
