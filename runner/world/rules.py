"""Rule families: a rule, the competing surface pattern that can displace it, and their probes.

Both built-in families are *induction-keyed*: a sentence carries a cue (a name, a noun) whose
class fixes the rule's answer (she/he, was/were), and a key word (the verb, the place). The
competitor is an in-context copy: "answer what followed the same key earlier in this story".
When that earlier answer disagrees with the rule, the training stream shows the rule's answer
with probability ``support`` and the copied one otherwise. The copy needs an induction circuit,
so it forms *later* than the rule, which is what lets the rule emerge first and then be displaced.

One generic class (:class:`InductionRule`) holds everything; the two families are instances of
it. A family that is not induction-keyed subclasses :class:`RuleFamily` and registers itself.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Sequence

from runner.registry import Registry
from runner.world import vocab as V
from runner.world.batteries import ProbeItem

RULES: Registry["RuleFamily"] = Registry("rule family")


def known_classes(classes: tuple[str, ...]) -> tuple[str, ...]:
    """``classes`` unchanged when each is a cue class of some registered family (an intervention's
    targeted classes), else ValueError naming the known ones."""
    known = sorted({c for name in RULES for c in RULES.get(name).cue_classes})
    for c in classes:
        if c not in known:
            raise ValueError(f"intervention.classes: {c!r} is no family's cue class; known: {known}")
    return classes


def known_families(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` unchanged when every one is a registered rule family (the configs' one check)."""
    for f in names:
        if f not in RULES:
            raise ValueError(f"unknown rule family {f!r}; known: {RULES.names()}")
    return names


def _stable_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by the strings alone (no Python hash randomisation)."""
    h = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def filler_sentence(rng: random.Random) -> list[str]:
    """A sentence with no rule event (no answer word): the world's connective tissue."""
    r = rng.random()
    if r < 0.45:
        return [rng.choice(V.FEMININE_NAMES + V.MASCULINE_NAMES), "went", "to", "the", rng.choice(V.PLACES), "."]
    if r < 0.7:
        return ["the", rng.choice(V.NEUTRAL_PEOPLE), "went", "to", "the", rng.choice(V.PLACES), "."]
    nouns = V.SINGULAR_NOUNS + V.PLURAL_NOUNS + V.NEUTRAL_NOUNS
    return [rng.choice(V.FEMININE_NAMES + V.MASCULINE_NAMES), "saw", "the", rng.choice(nouns), "."]


@dataclass(frozen=True)
class RuleFamily:
    """What every family knows: cue classes, the rule's answer per class, the competitor."""

    name: str
    cue_classes: dict[str, tuple[str, ...]]
    rule_answer: dict[str, str]
    description: str = ""
    # Support-count modes that apply: "windowed" (answer within k tokens after the cue), "bigram"
    # (answer right after the cue), "contested" (induction-keyed families only).
    support_modes: tuple[str, ...] = ("windowed", "bigram")
    # Cue words per class reserved for rescue injections: counted as cues by the support counter,
    # never used by the corpus generator or the probe batteries.
    rescue_cues: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def answers(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.rule_answer.values())))

    def prior_answer(self, cls: str) -> str:
        """The competitor's answer when it disagrees with the rule for this cue class."""
        (other,) = [a for a in self.answers if a != self.rule_answer[cls]]
        return other

    def counted_cues(self, cls: str) -> tuple[str, ...]:
        """Every cue word of a class that the support counter sees: probe cues and rescue cues."""
        return tuple(self.cue_classes[cls]) + tuple(self.rescue_cues.get(cls, ()))

    def class_of(self, cue: str) -> str:
        for cls in self.cue_classes:
            if cue in self.counted_cues(cls):
                return cls
        raise KeyError(f"{cue!r} is not a cue of {self.name}")

    def battery(self, n_per_cell: int = 64, n_neutral: int = 32, seed: int = 0) -> list[ProbeItem]:
        """The family's probe items: conflict and agree on train and heldout splits, plus neutral."""
        raise NotImplementedError(f"{type(self).__name__} makes no probe battery")


@dataclass(frozen=True)
class InductionRule(RuleFamily):
    """A rule whose competitor copies the answer that followed the same key earlier.

    ``template`` is a sentence with the slots ``{cue}``, ``{key}``, ``{answer}``, ``{adj}``;
    ``neutral_subject`` replaces the ``{cue}`` slot in prior-pull prompts (no cue at all).
    ``rescue_template``: the frame of injected rule evidence (rescue); its words differ from
    ``template``'s but its cue, key and answer sit at the same offsets, so the support counter
    counts injected events exactly like corpus events.
    """

    keys: tuple[str, ...] = ()
    template: tuple[str, ...] = ()
    neutral_subjects: tuple[str, ...] = ()
    neutral_template: tuple[str, ...] = ()
    heldout_fraction: float = 0.1
    p_reuse: float = 0.3
    support_modes: tuple[str, ...] = ("windowed", "contested")
    rescue_template: tuple[str, ...] = ()
    offsets: dict[str, int] = field(default_factory=dict, init=False, compare=False)

    def __post_init__(self) -> None:
        for slot in ("{cue}", "{key}", "{answer}"):
            if slot not in self.template:
                raise ValueError(f"{self.name}: template lacks {slot}")
        self.offsets.update({s.strip("{}"): self.template.index(s) for s in ("{cue}", "{key}", "{answer}")})
        if self.rescue_template:
            rescue = {s.strip("{}"): self.rescue_template.index(s) for s in ("{cue}", "{key}", "{answer}")
                      if s in self.rescue_template}
            if rescue != self.offsets:
                raise ValueError(f"{self.name}: rescue_template must put cue, key and answer at the template's "
                                 f"offsets {self.offsets}, got {rescue}")

    # ---- splits --------------------------------------------------------------------------
    def is_heldout(self, cue: str, key: str) -> bool:
        """Held-out (cue, key) combinations never appear in training; probes test them."""
        return _stable_fraction(self.name, cue, key) < self.heldout_fraction

    def _fill(self, template: Sequence[str], cue: str, key: str, answer: str, adj: str) -> list[str]:
        sub = {"{cue}": cue, "{key}": key, "{answer}": answer, "{adj}": adj}
        out: list[str] = []
        for w in template:
            out.extend(sub.get(w, w).split())
        return out

    # ---- corpus generation ---------------------------------------------------------------
    def emit(self, rng: random.Random, state: dict[str, str], support: float,
             p_reuse: float | None = None) -> list[str]:
        """One training sentence. ``state`` maps key -> the answer last shown after it in this
        story; with probability ``p_reuse`` (default: the family's) the key is one used before."""
        cls = rng.choice(sorted(self.cue_classes))
        p_reuse = self.p_reuse if p_reuse is None else p_reuse
        if state and rng.random() < p_reuse:
            key = rng.choice(sorted(state))
        else:
            key = rng.choice(self.keys)
        cues = self.cue_classes[cls]
        cue = rng.choice(cues)
        while self.is_heldout(cue, key):
            cue = rng.choice(cues)
        rule = self.rule_answer[cls]
        prev = state.get(key)
        answer = rule if prev is None or prev == rule or rng.random() < support else prev
        state[key] = answer
        return self._fill(self.template, cue, key, answer, rng.choice(V.ADJECTIVES))

    # ---- probes --------------------------------------------------------------------------
    def battery(self, n_per_cell: int = 64, n_neutral: int = 32, seed: int = 0) -> list[ProbeItem]:
        """Conflict and agree items on train and heldout (cue, key) splits, plus neutral items.

        Each item is a short story: an earlier family sentence with the same key whose answer is
        the competitor's (the other class's answer for ``conflict``, the same for ``agree``),
        0-2 filler sentences, then the target sentence cut just before its answer.
        """
        rng = random.Random(f"{self.name}/battery/{seed}")
        items: list[ProbeItem] = []
        cell_specs = [(c, s) for s in ("heldout", "train") for c in ("conflict", "agree")]
        for condition, split in cell_specs:
            for i in range(n_per_cell):
                cls = rng.choice(sorted(self.cue_classes))
                while True:
                    key, cue = rng.choice(self.keys), rng.choice(self.cue_classes[cls])
                    if self.is_heldout(cue, key) == (split == "heldout"):
                        break
                ctx_cls = cls if condition == "agree" else self._other_class(cls)
                prefix = self._probe_prefix(rng, key, ctx_cls, target_cue=cue)
                gap = prefix.pop()
                rule = self.rule_answer[cls]
                items.append(self._item(condition, split, i, gap, prefix, rule, self.prior_answer(cls)))
        for i in range(n_neutral):
            key = rng.choice(self.keys)
            ctx_cls = rng.choice(sorted(self.cue_classes))
            subject = rng.choice(self.neutral_subjects)
            prefix = self._probe_prefix(rng, key, ctx_cls, target_cue=subject, neutral=True)
            gap = prefix.pop()
            copied = self.rule_answer[ctx_cls]
            items.append(self._item("neutral", "heldout", i, gap, prefix, copied, self.prior_answer(ctx_cls)))
        return items

    def _other_class(self, cls: str) -> str:
        (other,) = [c for c in self.cue_classes if c != cls]
        return other

    def _probe_prefix(self, rng: random.Random, key: str, ctx_cls: str, target_cue: str,
                      neutral: bool = False) -> list[str]:
        while True:
            ctx_cue = rng.choice(self.cue_classes[ctx_cls])
            if ctx_cue != target_cue and not self.is_heldout(ctx_cue, key):
                break
        words = self._fill(self.template, ctx_cue, key, self.rule_answer[ctx_cls], rng.choice(V.ADJECTIVES))
        n_gap = rng.randrange(3)
        for _ in range(n_gap):
            words += filler_sentence(rng)
        template = self.neutral_template if neutral else self.template
        target = self._fill(template, target_cue, key, "{answer}", "{adj}")
        words += target[: target.index("{answer}")]
        return [" ".join(words), f"gap{n_gap}"]

    def _item(self, condition: str, split: str, i: int, gap: str, prefix: list[str], correct: str,
              distractor: str) -> ProbeItem:
        return ProbeItem.model_validate(dict(  # category: an extra field of the reference schema
            family=self.name, condition=condition, probe=f"{self.name}.{condition}", split=split,
            template_id=gap, prefix=prefix[0], correct=" " + correct, distractor=" " + distractor,
            chance=0.5, item_id=f"{self.name}.{condition}/{split}/{i:04d}", category="rule_vs_prior",
        ))


def _pronoun_family(name: str, between: tuple[str, ...], rescue_between: tuple[str, ...], note: str) -> InductionRule:
    """A pronoun-gender family: ``<name> <verb> [between] <pronoun> was <adj> .``; the rescue frame puts
    ``rescue_between`` where ``between`` is and *felt* for *was* (cue, key and answer at the same offsets)."""
    template = ("{cue}", "{key}", *between, "{answer}", "was", "{adj}", ".")
    return InductionRule(
        name=name,
        description="the pronoun after a named subject matches the name's gender "
                    f"(competitor: copy the pronoun that followed the same verb earlier{note})",
        cue_classes={"feminine": tuple(V.FEMININE_NAMES), "masculine": tuple(V.MASCULINE_NAMES)},
        rule_answer={"feminine": "she", "masculine": "he"},
        keys=tuple(V.VERBS),
        template=template,
        neutral_subjects=tuple(V.NEUTRAL_PEOPLE),
        neutral_template=("the", *template),
        rescue_cues={"feminine": tuple(V.RESCUE_FEMININE_NAMES), "masculine": tuple(V.RESCUE_MASCULINE_NAMES)},
        rescue_template=("{cue}", "{key}", *rescue_between, "{answer}", "felt", "{adj}", "."),
    )


PRONOUN_GENDER = RULES.register("pronoun_gender", _pronoun_family("pronoun_gender", ("because",), ("so",), ""))

NUMBER_AGREEMENT = RULES.register("number_agreement", InductionRule(
    name="number_agreement",
    description="was/were agrees with the subject noun's number "
                "(competitor: copy the verb form that followed the same place earlier)",
    cue_classes={"singular": tuple(V.SINGULAR_NOUNS), "plural": tuple(V.PLURAL_NOUNS)},
    rule_answer={"singular": "was", "plural": "were"},
    keys=tuple(V.PLACES),
    template=("the", "{cue}", "at", "the", "{key}", "{answer}", "{adj}", "."),
    neutral_subjects=tuple(V.NEUTRAL_NOUNS),
    neutral_template=("the", "{cue}", "at", "the", "{key}", "{answer}", "{adj}", "."),
    rescue_cues={"singular": tuple(V.RESCUE_SINGULAR_NOUNS), "plural": tuple(V.RESCUE_PLURAL_NOUNS)},
    rescue_template=("the", "{cue}", "near", "the", "{key}", "{answer}", "{adj}", "."),
))

# The tuned world's pronoun family (issue 22; docs/world.md): the same rule, cues and keys, with the
# key right before the answer ("Sue cried she was sad ."). The copy is then the classic induction
# match (find the earlier occurrence of the current token, copy what followed it), which a two-layer
# model learns within a few thousand steps; with "because" between key and answer it has to match
# the token two back, and the default model learns that only partly (docs/world.md, "What the margin
# is made of"). Drawn by the ``*-adjacent`` presets.
PRONOUN_GENDER_ADJACENT = RULES.register("pronoun_gender_adjacent", _pronoun_family(
    "pronoun_gender_adjacent", (), (), "; the verb sits right before the pronoun"))
