"""Corpus presets of the built-in world: how a synthetic story is drawn, by name."""

from __future__ import annotations

from dataclasses import dataclass

from runner.registry import Registry
from runner.world.rules import RULES, InductionRule


@dataclass(frozen=True)
class SyntheticSpec:
    """How a synthetic story is drawn: sentence-type mix and per-family support."""

    support: float
    p_family: tuple[tuple[str, float], ...] = (("pronoun_gender", 0.7), ("number_agreement", 0.2))
    p_reuse: float = 0.4  # P(a family sentence reuses a key already used in the story)

    def __post_init__(self) -> None:
        if sum(p for _, p in self.p_family) > 1:
            raise ValueError("family probabilities sum past 1")


PRESETS: Registry[SyntheticSpec] = Registry("corpus preset")


PRESETS.register("stories", SyntheticSpec(support=0.8))


PRESETS.register("web", SyntheticSpec(support=0.1))


PRESETS.register("synthetic", SyntheticSpec(support=0.5))  # support must be given explicitly


# Opt-in a/an (runner.world.articles): the same world plus article sentences; their own words
# enter the tokenizer only here, so the presets above keep their vocabulary, streams and run ids.
AN_MIX = (("pronoun_gender", 0.6), ("number_agreement", 0.15), ("a_an", 0.15))
PRESETS.register("stories-an", SyntheticSpec(support=0.8, p_family=AN_MIX))
PRESETS.register("web-an", SyntheticSpec(support=0.1, p_family=AN_MIX))


# The tuned world (issue 22, docs/world.md): the pronoun family with its key right before the answer,
# so the in-context copy is a plain induction match. Same mix, support and reuse as the originals.
ADJACENT_MIX = (("pronoun_gender_adjacent", 0.7), ("number_agreement", 0.2))
PRESETS.register("stories-adjacent", SyntheticSpec(support=0.8, p_family=ADJACENT_MIX))
PRESETS.register("web-adjacent", SyntheticSpec(support=0.1, p_family=ADJACENT_MIX))
PRESETS.register("synthetic-adjacent", SyntheticSpec(support=0.5, p_family=ADJACENT_MIX))  # support must be given


def drawn_families(preset: str) -> tuple[str, ...]:
    """The rule families a preset's stories write, in its mix order."""
    return tuple(name for name, _ in PRESETS.get(preset).p_family)


def probe_families(preset: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """What a run on ``preset`` probes when it names no families: ``default`` when the preset's
    stories write all of it (every original preset), else every family they write (``*-adjacent``)."""
    if preset not in PRESETS or set(default) <= set(drawn_families(preset)):
        return default
    return drawn_families(preset)


def undrawn_induction_families(preset: str, families: tuple[str, ...]) -> tuple[str, ...]:
    """The induction-keyed ``families`` that ``preset``'s stories never write: their probes would
    measure a template the run never saw (e.g. ``pronoun_gender`` on ``web-adjacent``)."""
    drawn = drawn_families(preset)
    return tuple(f for f in families if f not in drawn and isinstance(RULES.get(f), InductionRule))


def check_reference(v: str) -> str:
    """An intervention's rescue reference (its unit delta): ``paper`` (the paper's 1.67175e-3
    targeted-class windowed rule events per token of TinyStories), a preset to measure at the run's
    size (``stories``), or a positive number of events per token; else ValueError naming them."""
    try:
        if float(v) > 0:
            return v
    except ValueError:
        if v == "paper" or v in PRESETS:
            return v
    raise ValueError(f"intervention.reference {v!r}: write 'paper' (the paper's delta 1.67175e-3), a built-in "
                     f"preset to measure ({PRESETS.names()}) or a positive number of events per token")
