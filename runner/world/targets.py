"""Which cue classes a class-conditional edit (the paper's kill) targets in a family.

Shared by :mod:`interventions.kill` (which edits) and :mod:`runner.analysis.agree_control`
(which must know, from a run's config alone, which agree items the edit left untouched).
"""

from __future__ import annotations

from runner.world.rules import RuleFamily
from runner.world.rvp import RuleVsPrior


def default_target(family: RuleFamily) -> str:
    """The class a kill or rescue targets when none is named: a/an families' vowel class (the
    class whose rule answer is *an*), else the first class in sorted order (``feminine`` of the
    pronoun families, ``plural`` of number_agreement)."""
    if isinstance(family, RuleVsPrior) and family.kind == "a_an":
        (cls,) = [c for c, a in family.rule_answer.items() if a == "an"] or [sorted(family.cue_classes)[0]]
        return cls
    return sorted(family.cue_classes)[0]


def targets_of(family: RuleFamily, classes: tuple[str, ...]) -> tuple[str, ...]:
    """The classes of ``family`` among ``classes`` (the config's ``intervention.classes``), or its
    :func:`default_target` when none of them is one of its classes."""
    mine = tuple(c for c in classes if c in family.cue_classes)
    return mine or (default_target(family),)
