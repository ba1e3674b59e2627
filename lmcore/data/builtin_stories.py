"""`builtin:stories`: a seeded, unambiguous stochastic grammar of short children's stories.

The story program `_tell` is written once against a tiny chooser interface (`say`, `pick`,
`emit`) and run in two modes: `_Sampler` draws every choice from an rng (generation) and
`_Parser` recovers the choices from a given text by backtracking search (scoring). Because
the parser enumerates *every* choice sequence that reproduces the text, `parses` proves
empirically that the grammar is unambiguous, which makes the summed log-probabilities of
the choices the exact log-probability of the text, i.e. a true entropy floor for a model.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from typing import Callable, Iterator, NamedTuple, Sequence


class Story(NamedTuple):
    text: str
    logprob: float  # natural log-probability of all random choices made to produce text (<= 0)


class _Table:
    """Weighted options for one random choice, with cumulative weights and log-probs precomputed."""

    __slots__ = ("values", "logps", "cum", "total")

    def __init__(self, values: Sequence, weights: Sequence[float] | None = None) -> None:
        ws = [1.0] * len(values) if weights is None else [float(w) for w in weights]
        assert len(ws) == len(values) and all(w > 0 for w in ws)
        self.values = tuple(values)
        self.total = sum(ws)
        self.logps = tuple(math.log(w / self.total) for w in ws)
        self.cum = tuple(itertools.accumulate(ws))


def _zipf(n: int, s: float = 0.5) -> list[float]:
    # Skewed weights: frequent and rare words, like real text, and a less trivial entropy.
    return [1.0 / (i + 1) ** s for i in range(n)]


def _t(*values, weights: Sequence[float] | None = None, s: float | None = None) -> _Table:
    return _Table(values, weights if s is None else _zipf(len(values), s))


# ---- vocabulary (all lists are disjoint so that no word can be read as two different choices)
GIRL_NAMES = ("Lily", "Mia", "Emma", "Sara", "Anna", "Lucy", "Zoe", "Ella",
              "Rosa", "Nina", "Amy", "Kate", "Maya", "Ruby", "Lena", "Ivy")
BOY_NAMES = ("Tom", "Ben", "Sam", "Leo", "Jack", "Tim", "Finn", "Noah",
             "Jake", "Luke", "Owen", "Theo", "Eli", "Hugo", "Nick", "Adam")
_NAMES = {"girl": _Table(GIRL_NAMES, _zipf(16, 0.4)), "boy": _Table(BOY_NAMES, _zipf(16, 0.4))}
# Upper-case keys start a sentence. Every he/she/his/her/him in a story is the main character.
PRONOUNS = {"girl": dict(S="She", s="she", O="her", P="her", Pc="Her"),
            "boy": dict(S="He", s="he", O="him", P="his", Pc="His")}
PLACES = ("forest", "river", "lake", "sea", "hill", "park", "farm", "village",
          "castle", "garden", "beach", "mountain", "meadow", "pond", "woods")
_PLACES = _Table(PLACES, _zipf(len(PLACES), 0.5))
# (animal, what it does when it wants attention)
_PETS = _t(("dog", "barked"), ("cat", "meowed"), ("puppy", "barked"), ("kitten", "meowed"),
           ("bird", "chirped"), ("duck", "quacked"), ("frog", "croaked"), ("mouse", "squeaked"),
           ("pony", "neighed"), ("goat", "bleated"), ("parrot", "squawked"),
           ("hamster", "squeaked"), ("bunny", "wiggled its nose"), ("turtle", "poked out its head"),
           s=0.8)
_PET_NAMES = _t("Spot", "Bella", "Coco", "Pip", "Fluffy", "Biscuit", "Buddy", "Sunny",
                "Patch", "Pepper", "Rex", "Whiskers", s=0.5)
_OBJECTS = _t("ball", "kite", "hat", "box", "key", "book", "toy car", "teddy bear", "shell",
              "stone", "cup", "map", "bell", "feather", "crayon", "drum", "balloon", "scarf",
              "coin", "ring", s=0.6)
_WILD = _t("fox", "deer", "bear", "squirrel", "hedgehog", "owl", "raccoon", "beaver", "badger",
           "baby bird", s=0.5)
# "" = no adjective; the article then agrees with the noun instead.
_CHILD_ADJ = _t("little", "kind", "happy", "brave", "curious", "shy", "clever", "funny", s=0.6)
_PET_ADJ = _t("", "little", "fluffy", "funny", "sleepy", "tiny", "old", "happy",
              weights=[4, 3, 2, 1, 1, 1, 1, 1])
_OBJ_ADJ = _t("", "shiny", "red", "blue", "little", "big", "old", "pretty", "yellow", "soft",
              "green", "golden", weights=[6] + _zipf(11))
_WILD_ADJ = _t("", "little", "young", "tired", weights=[5, 2, 1, 1])

# ---- sentence parts. `{N}` is the main character's name, `{comp}` the pet's or friend's name.
_OPENINGS = _t("Once upon a time, there was", "Once upon a time, there lived",
               "Long ago, there lived", "There once was", "Not long ago, there was",
               weights=[6, 2, 1, 1, 1])
_GENDERS = _t("girl", "boy")
_FAMILY = _t("mom", "dad", "grandma", "grandpa", "mom and dad", "aunt", s=0.8)
_HOUSES = _t("small", "little", "big", "cozy", "old", "yellow", s=0.8)
_LIKES = _t(" {N} loved to", " {S} liked to", " Every day, {N} liked to",
            " More than anything, {N} loved to", s=1.0)
_ACTIVITIES = _t("play outside", "draw pictures", "sing songs", "read books", "climb trees",
                 "dance", "pick flowers", "play games", "look at the stars", "run fast",
                 "build towers", "splash in puddles", s=0.6)
_PET_LINE, _FRIEND_LINE = " {S} had", " {Pc} best friend was"
_COMPANIONS = _t(_PET_LINE, _FRIEND_LINE, weights=[3, 2])
_PET_HABITS = _t(" {comp} liked to chase butterflies.", " {comp} liked to sleep in the sun.",
                 " {comp} liked to play with sticks.", " {comp} followed {N} everywhere.", s=0.5)
_FRIEND_HOMES = _t(" {comp} lived next door.", " {comp} lived down the street.",
                   " {comp} lived on the other side of the {place}.", s=0.5)
_DAYS = _t("One day", "One morning", "One sunny day", "One afternoon", s=1.0)
_FOUND_AT = _t("under a tree", "in the grass", "on the path", "behind a rock",
               "next to the {place}", s=0.5)
_AFTER_FIND = _t("", " {S} took it home.", " {S} showed it to {comp}.",
                 " {S} put it in {P} pocket.", weights=[3, 2, 2, 1])

_LOST_1 = _t("{N} played with the {obj} every day.", "{N} took the {obj} everywhere.")
_LOST_2 = _t(" But one morning, the {obj} was gone!", " But one evening, the {obj} was gone!",
             " But one day, the {obj} was lost!", s=0.5)
_SEARCH = _t("under the bed", "in the garden", "behind the door", "everywhere", s=0.5)
_LOST_PET = _t(" Then {comp} {sound} and ran to the {place}.")
_LOST_FRIEND = _t(" Then {comp} said, \"I saw it near the {place}!\"",
                  " Then {comp} said, \"Let us look by the {place}!\"")
_HIDING = _t("under a big rock", "in the tall grass", "by an old tree", "next to a log",
             "in the mud", s=0.5)
_LOST_END = _t(" {N} was so happy.", " {N} gave {comp} a big hug.", " {N} jumped for joy.")

_TRIP_WHY = _t(" for a walk.", " to play.", " to have a picnic.", " to look for treasure.")
_BRING = _t(" {N} brought the {obj} with {O}.", " {N} put the {obj} in {P} bag.")
_PROBLEMS = _t(
    ("hungry", _t(" {N} gave it some bread.", " {N} shared {P} lunch with it.")),
    ("lost", _t(" {N} helped it find its way home.")),
    ("stuck in the mud", _t(" {N} and {comp} pulled it out.")),
    ("sad", _t(" {N} sang it a song.", " {N} showed it the {obj}.")),
    ("scared", _t(" {N} said, \"Do not be afraid.\"")),
    s=0.5)
_THANKS = _t(" \"Thank you,\" said the {wild}.", " The {wild} smiled and ran away.",
             " The {wild} was happy again.")
_TRIP_END = _t(" Then {N} and {comp} walked back to the {place}.",
               " When the sun went down, they went back to the {place}.")

_SKY = _t(" Suddenly, the sky turned dark and it started to rain.",
          " Suddenly, the sky turned gray and it started to rain.",
          " Then big clouds came and it began to rain.", s=0.8)
_SHELTERS = _t("under a big tree", "into an old barn", "into a small cave", "under a bridge")
_WAIT = _t(" They waited and played with the {obj}.", " They waited and told funny stories.",
           " They waited and sang songs.")
_RAINBOWS = _t("big", "bright", "beautiful")

_SAD = _t(" {comp} looked sad.", " {comp} was very sad.")
_SAD_PET = _t(" {comp} did not want to play.", " {comp} did not want to eat.")
_GIVE = _t(" {N} gave {comp} the {obj}.", " {N} shared the {obj} with {comp}.")
_GLAD_PET = _t(" {comp} {sound} happily.", " {comp} jumped up and down.")
_GLAD_FRIEND = _t(" {comp} smiled and said, \"Thank you, {N}!\"",
                  " {comp} laughed and hugged {N}.")

_GIFT_1 = _t("{N} wanted to make a gift for {P} {fam}.", "{N} wanted to surprise {P} {fam}.")
_WRAPS = _t("red", "blue", "green", "pink", "gold")
_GIFT_HELP = _t(" {comp} helped {O}.", " {comp} watched and waited.")
_GIFT_JOY = _t(" {Pc} {fam} smiled and said, \"Thank you, {N}!\"",
               " {Pc} {fam} was so surprised.", " {Pc} {fam} gave {O} a big hug.")

_ENDINGS = _t("From that day on, {N} and {comp} were best friends.",
              "From that day on, {N} and {comp} played together every day.",
              "That night, {N} told {P} {fam} all about the {obj}.",
              "Later, {N} and {comp} went back to the house near the {place}.", s=0.5)
_FINALES = _t(" It was the best day ever.", " {S} would never forget this day.",
              " {N} smiled and went to sleep.", " {S} felt happy and proud.", s=0.5)


@functools.lru_cache(maxsize=None)
def _friends(name: str) -> _Table:
    # A friend is anyone but the main character, so the two names never collide.
    names = [n for n in GIRL_NAMES + BOY_NAMES if n != name]
    return _Table(names, _zipf(len(names), 0.3))


@functools.lru_cache(maxsize=None)
def _other_places(place: str) -> _Table:
    return _Table([p for p in PLACES if p != place], _zipf(len(PLACES) - 1, 0.5))


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ---- the story program: runs unchanged under both choosers
def _noun_phrase(c, adjs: _Table, nouns: _Table, key: Callable = str):
    """Say ' a/an [adjective] noun' (the article agrees with the next word); return the noun."""
    adj = c.say(adjs, lambda a: f" {_an(a)} {a}" if a else "")
    if adj:
        return c.say(nouns, lambda v: f" {key(v)}")
    return c.say(nouns, lambda v: f" {_an(key(v))} {key(v)}")


def _tell(c) -> None:
    c.say(_OPENINGS)
    c.say(_CHILD_ADJ, lambda a: f" {_an(a)} {a}")
    gender = c.say(_GENDERS, lambda g: f" {g} named ")
    x = dict(PRONOUNS[gender], N=c.say(_NAMES[gender]))  # context shared by every later sentence

    def say(table: _Table) -> object:
        return c.say(table, lambda s: s.format_map(x))

    def emit(template: str) -> None:
        c.emit(template.format_map(x))

    emit(". {S} lived with {P} ")
    x["fam"] = c.say(_FAMILY)
    c.say(_HOUSES, lambda h: f" in {_an(h)} {h} house near the ")
    x["place"] = c.say(_PLACES)
    c.emit(".")
    say(_LIKES)
    c.say(_ACTIVITIES, lambda a: f" {a}.")
    pet = say(_COMPANIONS) == _PET_LINE
    if pet:
        x["animal"], x["sound"] = _noun_phrase(c, _PET_ADJ, _PETS, key=lambda v: v[0])
        x["comp"] = c.say(_PET_NAMES, lambda n: f" named {n}.")
    else:
        x["comp"] = c.say(_friends(x["N"]), lambda n: f" {n}.")
    say(_PET_HABITS if pet else _FRIEND_HOMES)
    c.say(_DAYS, lambda d: f" {d}, {x['N']} found")
    x["obj"] = _noun_phrase(c, _OBJ_ADJ, _OBJECTS)
    c.say(_FOUND_AT, lambda w: " " + w.format_map(x) + ".")
    say(_AFTER_FIND)
    c.emit("\n")
    c.pick(_PLOTS)(c, x, say, emit, pet)
    c.emit("\n")
    say(_ENDINGS)
    say(_FINALES)  # mandatory last sentence: a story cut at a sentence boundary is invalid


def _lost(c, x, say, emit, pet: bool) -> None:
    say(_LOST_1)
    say(_LOST_2)
    emit(" {N} looked")
    c.say(_SEARCH, lambda w: f" {w}, but {x['s']} could not find it.")
    say(_LOST_PET if pet else _LOST_FRIEND)
    emit(" {N} and {comp} ran to the {place} and found the {obj}")
    c.say(_HIDING, lambda w: f" {w}.")
    say(_LOST_END)


def _trip(c, x, say, emit, pet: bool) -> None:
    emit("{N} and {comp} went to the ")
    x["place2"] = c.say(_other_places(x["place"]))
    say(_TRIP_WHY)
    say(_BRING)
    c.emit(" There they saw")
    x["wild"] = _noun_phrase(c, _WILD_ADJ, _WILD)
    c.emit(".")
    _, helps = c.say(_PROBLEMS, lambda p: f" The {x['wild']} was {p[0]}.")
    say(helps)
    say(_THANKS)
    say(_TRIP_END)


def _rain(c, x, say, emit, pet: bool) -> None:
    emit("{N} and {comp} went to play by the {place}.")
    say(_BRING)
    say(_SKY)
    c.say(_SHELTERS, lambda s: f" They ran {s}.")
    say(_WAIT)
    c.say(_RAINBOWS, lambda a: f" Soon the rain stopped and they saw {_an(a)} {a} rainbow.")


def _share(c, x, say, emit, pet: bool) -> None:
    emit("{N} and {comp} sat by the {place}.")
    say(_SAD)
    if pet:
        say(_SAD_PET)
    else:
        emit(" {comp} said, \"I have nothing to play with.\"")
    say(_GIVE)
    say(_GLAD_PET if pet else _GLAD_FRIEND)


def _gift(c, x, say, emit, pet: bool) -> None:
    say(_GIFT_1)
    emit(" {S} picked some flowers by the {place}.")
    c.say(_WRAPS, lambda w: f" {x['S']} wrapped the {x['obj']} in {w} paper.")
    say(_GIFT_HELP)
    emit(" Then {N} gave the gift to {P} {fam}.")
    say(_GIFT_JOY)


_PLOTS = _Table((_lost, _trip, _rain, _share, _gift), (3, 3, 2, 2, 2))


# ---- the two choosers
class _Sampler:
    """Draws each choice from an rng and accumulates the text and its log-probability."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.parts, self.logprob = rng, [], 0.0

    def pick(self, table: _Table, fmt: Callable | None = None):
        i = min(bisect.bisect_right(table.cum, self.rng.random() * table.total), len(table.cum) - 1)
        self.logprob += table.logps[i]
        return table.values[i]

    def say(self, table: _Table, fmt: Callable = str):
        value = self.pick(table)
        self.parts.append(fmt(value))
        return value

    def emit(self, text: str) -> None:
        self.parts.append(text)


class _Mismatch(Exception):
    """The text does not continue the way this choice path requires."""


class _Branch(Exception):
    """More than one option fits the text here; the search must try each of them."""

    def __init__(self, path: list[int], options: list[int]) -> None:
        self.path, self.options = path, options


class _Parser:
    """Replays the choices in `forced`, then picks the only option that fits the text or branches."""

    def __init__(self, text: str, forced: tuple[int, ...]) -> None:
        self.text, self.forced, self.pos, self.path, self.logprob = text, forced, 0, [], 0.0

    def _take(self, table: _Table, i: int):
        self.path.append(i)
        self.logprob += table.logps[i]
        return table.values[i]

    def pick(self, table: _Table, fmt: Callable | None = None):
        k = len(self.path)
        if k < len(self.forced):
            return self._take(table, self.forced[k])
        if fmt is None:  # a silent choice: only the text that follows can tell
            options = list(range(len(table.values)))
        else:  # a spoken choice: keep the options whose words come next in the text
            text, pos = self.text, self.pos
            options = [i for i, v in enumerate(table.values) if text.startswith(fmt(v), pos)]
        if len(options) == 1:
            return self._take(table, options[0])
        if not options:
            raise _Mismatch
        raise _Branch(self.path, options)

    def say(self, table: _Table, fmt: Callable = str):
        value = self.pick(table, fmt)
        self.emit(fmt(value))
        return value

    def emit(self, text: str) -> None:
        if not self.text.startswith(text, self.pos):
            raise _Mismatch
        self.pos += len(text)


# ---- public API
def story(seed: int, index: int) -> Story:
    """Story number `index` of the corpus with `seed`; depends only on (seed, index) (random access, parallel-safe)."""
    # A string seed is hashed with SHA-512 by `random`, so it is stable across processes.
    sampler = _Sampler(random.Random(f"builtin-stories:{seed}:{index}"))
    _tell(sampler)
    return Story("".join(sampler.parts), sampler.logprob)


def iter_stories(seed: int, n: int | None = None, start: int = 0) -> Iterator[Story]:
    """Stories start, start+1, ... (n of them, or unlimited when n is None)."""
    indices = itertools.count(start) if n is None else range(start, start + n)
    for index in indices:
        yield story(seed, index)


def parses(text: str) -> list[float]:
    """Log-probabilities of every distinct choice path that produces exactly `text` (unambiguous: at most one)."""
    found, stack = [], [()]
    while stack:
        parser = _Parser(text, stack.pop())
        try:
            _tell(parser)
        except _Mismatch:
            continue
        except _Branch as branch:
            prefix = tuple(branch.path)
            stack.extend(prefix + (i,) for i in reversed(branch.options))
            continue
        if parser.pos == len(text):
            found.append(parser.logprob)
    return found


def score_story(text: str) -> float | None:
    """Log-probability of `text` under the grammar, or None when the grammar cannot produce it exactly."""
    found = parses(text)
    if not found:
        return None
    top = max(found)  # log-sum-exp; with an unambiguous grammar there is exactly one path
    return top + math.log(sum(math.exp(lp - top) for lp in found))
