"""Where the cue and the competitor's evidence sit in a probe item, which cue class it carries, and
where a multi-token answer is decided: for any battery, from the probe item fields.

Cue and evidence (word indices in ``prefix.split()``, -1 where there is none):

- induction-keyed families (:class:`runner.world.rules.InductionRule`, the built-in world): the
  target sentence's cue, and the answer word of the earlier sentence with the same key (the
  in-context copy's source), from the family's template (:func:`mech.probes.locate_words`);
- rule-versus-prior families with a cue lexicon (``runner.world.rvp``: ``pronoun_gender_ref``,
  ``reflexive_gender``...): the last prefix word that is one of the family's cue words; the
  evidence is the prefix's last word, the frame word whose bigram with the answer the prior's
  support counts (``"cried because" -> he``), so attention to it is the prior's read-out;
- families whose cue comes after the answer (``a_an``: *an* before *egg*): no cue in the prefix
  (-1); evidence as above;
- any other battery family: the template slot, the one prefix word that varies among the items
  of a template (same ``template_id``, split and word count); evidence as above.

Cue class (:func:`cue_class`): the registered family's class whose rule answer is the first word
of ``correct`` (conflict and agree items carry the rule's answer as ``correct``); for a family with
no registered classes, the item's condition (in the paper's battery conflict and agree items are
the two cue classes: feminine vs masculine cue, irregular vs regular verb). Neutral items have none.

Decision site (:func:`decision_tokens`): correct and distractor are tokenised on their own (as
``runner.scoring`` does); the tokens they share at their start (``" her|self"`` vs
``" him|self"`` share none, ``" more| big"`` vs ``" more| bigger"`` share one) are appended to the
prefix, and the first tokens where they differ are the pair whose logit gap is decomposed. With
single-token answers this is the first token at the last prefix position, as before.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from runner.world.batteries import ProbeItem
from runner.world.rules import RULES, InductionRule

_PUNCT = ".,;:!?\"'"


def _family(name: str):
    return RULES.get(name) if name in RULES else None


def cue_class(item: ProbeItem) -> str | None:
    """The cue class of a conflict or agree item (see the module docstring); None for neutral."""
    if item.condition not in ("conflict", "agree"):
        return None
    fam = _family(item.family)
    first = item.correct.split()[0] if item.correct.split() else ""
    if fam is not None:
        for cls, answer in fam.rule_answer.items():
            if answer == first:
                return cls
    return item.condition


def _cue_words(fam) -> set[str]:
    words: set[str] = set()
    for cls in getattr(fam, "cue_classes", {}):
        words.update(fam.counted_cues(cls))
    return words


def template_slots(items: Sequence[ProbeItem]) -> dict[str, int]:
    """item_id -> index of the one prefix word that varies among the items of its template (same
    ``template_id``, split and word count); items whose template varies in 0 or 2+ words are left out."""
    groups: dict[tuple, list[ProbeItem]] = defaultdict(list)
    for it in items:
        groups[(it.template_id, it.split, len(it.prefix.split()))].append(it)
    out: dict[str, int] = {}
    for group in groups.values():
        words = [it.prefix.split() for it in group]
        varying = [i for i in range(len(words[0])) if len({w[i] for w in words}) > 1]
        if len(varying) == 1:
            out.update({it.item_id: varying[0] for it in group})
    return out


def _lexicon_cue(words: list[str], cues: set[str]) -> int:
    hits = [i for i, w in enumerate(words) if w.strip(_PUNCT) in cues]
    return hits[-1] if hits else -1


def locate_all(items: Sequence[ProbeItem], induction_locate) -> list[tuple[int, int]]:
    """(cue word, evidence word) indices of every item of one family (see the module docstring).
    ``induction_locate``: the template-based locator of induction-keyed families."""
    if not items:
        return []
    fam = _family(items[0].family)
    if isinstance(fam, InductionRule):
        return [induction_locate(it) for it in items]
    slots = template_slots(items) if fam is None else {}
    cues = _cue_words(fam) if fam is not None else set()
    out = []
    for it in items:
        words = it.prefix.split()
        cue = _lexicon_cue(words, cues) if fam is not None else slots.get(it.item_id, -1)
        out.append((cue, len(words) - 1))
    return out


def decision_tokens(correct_ids: list[int], distractor_ids: list[int]) -> tuple[list[int], int, int]:
    """(shared leading tokens, correct id, distractor id) at the first position where the two
    continuations differ. Identical continuations (or one a prefix of the other) give the last
    token both share (a zero gap) rather than an error: such an item cannot be told apart."""
    k = 0
    while k < min(len(correct_ids), len(distractor_ids)) and correct_ids[k] == distractor_ids[k]:
        k += 1
    k = min(k, len(correct_ids) - 1, len(distractor_ids) - 1)
    return list(correct_ids[:k]), int(correct_ids[k]), int(distractor_ids[k])
