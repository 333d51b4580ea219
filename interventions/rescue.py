"""The paper's rescue: symmetric documents of rule evidence in cue words and frames no probe uses.

Li & Sreedhar (2026): *inject symmetric girl->she and boy->he documents at doses {0.01, 0.1, 1,
3} x deltaTS (girl-class windowed events per token of TinyStories); an equal token count of
neutral documents removed, so the corpus size is unchanged. Injected names and frames disjoint
from every probe.* For a built-in family (an induction-keyed family with ``rescue_cues`` and a
``rescue_template``):

- **events**: T = round(d x delta x base tokens [x steps / window steps with ``whole_dose``]) rule
  events of *every* class (symmetric), each a ``rescue_template`` sentence (``Ava cried so she felt
  sad .``) with a rescue cue and its class's rule answer; the keys of one document are distinct, so
  no sentence contests an earlier one (this is not the contest injection, ``rescue-contest``).
- **documents**: token-matched (default), each injected document replaces one row of the base
  corpus and has exactly that row's token count: the rows with the fewest cues of the dosed
  families (neutral first; seeded order among equals) are replaced, so the token count and the
  row count are unchanged; the removed rows' events are recorded. Rows are filled with rescue
  sentences up to capacity and the rest with name-free, answer-free filler sentences
  (``the teacher went to the park .``). Appended (``matched = false``): full rows added at seeded
  positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from runner.world import vocab as V
from runner.world.rules import InductionRule

from .registry import InterventionError

PAPER_DELTA = 1.67175e-3  # deltaTS: girl-class windowed rule events per token of TinyStories (the paper)
FILLERS: dict[int, tuple[str, ...]] = {7: ("the", "{person}", "went", "to", "the", "{place}", "."),
           6: ("the", "{person}", "saw", "the", "{noun}", "."),
           5: ("the", "{person}", "saw", "{noun}", ".")}


def fillable(r: int) -> bool:
    """Whether ``r`` tokens can be filled exactly with filler sentences of 5, 6 and 7 tokens."""
    return r == 0 or r in FILLERS or r >= 10


def filler_lengths(r: int) -> list[int]:
    out = []
    while r:
        n = r if r in FILLERS else next(n for n in (7, 6, 5) if fillable(r - n))
        out.append(n)
        r -= n
    return out


def capacity(length: int, sentence: int) -> int:
    """Most rescue sentences of ``sentence`` tokens in a document of ``length`` tokens (``<bos>``
    first) whose rest fillers fill exactly; -1 when no filling exists."""
    for m in range((length - 1) // sentence, -1, -1):
        if fillable(length - 1 - m * sentence):
            return m
    return -1


def _filler(rng: random.Random, n: int) -> list[str]:
    sub: dict[str, str] = {"{person}": rng.choice(V.NEUTRAL_PEOPLE), "{place}": rng.choice(V.PLACES),
                           "{noun}": rng.choice(V.NEUTRAL_NOUNS)}
    return [sub[w] if w in sub else w for w in FILLERS[n]]


def document(fam: InductionRule, rng: random.Random, length: int, classes: list[str]) -> list[str]:
    """``<bos>`` + one rescue sentence per entry of ``classes`` (distinct keys) + fillers, exactly
    ``length`` words, sentences and fillers in seeded order."""
    keys = rng.sample(list(fam.keys), k=min(len(classes), len(fam.keys)))
    sents: list[list[str]] = []
    for i, cls in enumerate(classes):
        sub = {"{cue}": rng.choice(fam.rescue_cues[cls]), "{key}": keys[i % len(keys)],
               "{answer}": fam.rule_answer[cls], "{adj}": rng.choice(V.ADJECTIVES)}
        sents.append([sub.get(w, w) for w in fam.rescue_template])
    rest = length - 1 - sum(len(s) for s in sents)
    if rest < 0 or not fillable(rest):
        raise ValueError(f"{len(classes)} sentences do not fill a document of {length} tokens")
    sents += [_filler(rng, n) for n in filler_lengths(rest)]
    rng.shuffle(sents)
    return [V.BOS] + [w for s in sents for w in s]


@dataclass
class Slots:
    """Where injected documents go: row index (or -1: appended) and length, and each slot's
    rescue sentences as a list of classes."""

    rows: list[int]
    lengths: list[int]
    classes: list[list[str]]


def plan_slots(fam: InductionRule, n_per_class: int, lengths: np.ndarray, order: np.ndarray,
               append_length: int | None) -> Slots:
    """Assign ``n_per_class`` sentences of every class to documents: rows of ``order`` (indices into
    ``lengths``, the rows' token counts), each filled to capacity, or (``append_length``) new rows
    of that length. Classes alternate, so each document is symmetric up to one sentence."""
    classes = sorted(fam.cue_classes)
    queue = [c for _ in range(n_per_class) for c in classes]
    size = len(fam.rescue_template)
    out = Slots([], [], [])
    it = iter(order.tolist())
    while queue:
        if append_length is not None:
            row, length = -1, append_length
        else:
            row = next(it, None)
            if row is None:
                raise InterventionError(f"{fam.name}: {n_per_class:,} events per class do not fit in the corpus's "
                                        "rows by replacement; lower the dose or set intervention.matched = false")
            length = int(lengths[row])
        take = min(capacity(length, size), len(queue))
        while take > 0 and not fillable(length - 1 - take * size):
            take -= 1  # the last, partial document: a count whose rest fillers can fill
        if take <= 0:
            if append_length is not None:
                raise InterventionError(f"{fam.name}: rows of {length} tokens hold no rescue sentence")
            continue
        out.rows.append(row)
        out.lengths.append(length)
        out.classes.append(queue[:take])
        queue = queue[take:]
    return out
