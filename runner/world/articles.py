"""The built-in world's a/an family (opt-in: the ``stories-an`` / ``web-an`` presets).

The rule: the article before a vowel-initial word is *an*; the prior: *a*, far more frequent
overall (most article events precede a consonant-initial word, where rule and prior coincide).
A sentence is ``<name> <verb> <article> [<adjective>] <noun> .``; the word right after the
article (the adjective when there is one, else the noun) decides the class: ``vowel`` (rule
*an*) or ``consonant`` (rule *a*). With probability ``an_support`` a vowel event shows *an*; the
rest show *a* (the counter events). The rule-support ratio S/C = an_support / (1 - an_support);
the default 0.959 is the paper's TinyStories ratio 23.4 (485,862 supporting vs 20,731 counter).
Unlike the induction-keyed families there is no in-context competitor: the prior is plain
frequency, as in the paper's a/an ladder, so the stationary corpus teaches the rule and a kill
(``an`` -> ``a`` before vowel-initial words, :mod:`interventions.kill`) takes its support away.

The family is a :class:`runner.world.rvp.RuleVsPrior` of kind ``a_an``, so support counting and
the paper's kill read it exactly like the lexicon families of the reference battery. Its probe
battery (``battery``) holds conflict items (``"... Tom found"`` -> `` an egg`` vs `` a egg``) and
agree items (`` a dog`` vs `` an dog``) on train and heldout splits: heldout (verb, deciding word)
pairs never occur in training. Its words that the base world lacks (``extra_words``) enter the
tokenizer only for presets that draw the family, so every other corpus keeps its vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from runner.world import vocab as V
from runner.world.batteries import ProbeItem
from runner.world.rules import RULES, _stable_fraction, filler_sentence
from runner.world.rvp import RuleVsPrior

ARTICLES = ("a", "an")
ARTICLE_VERBS = ("found", "wanted", "had", "saw")
VOWEL_NOUNS = tuple("apple egg eagle elephant igloo insect octopus orange umbrella acorn island oven ant owl".split())
CONSONANT_NOUNS = tuple("dog cat bird horse cow duck frog bear fox goat pig lion rabbit tiger hen crab".split())
VOWEL_ADJECTIVES = tuple("angry upset excited old odd empty icy ugly".split())
CONSONANT_ADJECTIVES = tuple("sad happy tired big small red tiny shy".split())


@dataclass(frozen=True)
class ArticleRule(RuleVsPrior):
    """The a/an rule of the built-in world (see the module docstring)."""

    an_support: float = 0.959  # P(an | vowel-initial word): rule-support ratio 23.4, the paper's
    p_vowel: float = 0.2  # share of article events before a vowel-initial word
    p_adjective: float = 0.3  # share of article events with an adjective between article and noun
    verbs: tuple[str, ...] = ARTICLE_VERBS
    nouns: dict[str, tuple[str, ...]] | None = None
    adjectives: dict[str, tuple[str, ...]] | None = None
    heldout_fraction: float = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.5 < self.an_support <= 1.0 or not 0.0 < self.p_vowel < 1.0:
            raise ValueError(f"{self.name}: an_support must be in (0.5, 1] and p_vowel in (0, 1)")

    # ---- words ---------------------------------------------------------------------------
    def words(self, cls: str, adjective: bool) -> tuple[str, ...]:
        """The deciding words of a class: its nouns, or its adjectives."""
        table = self.adjectives if adjective else self.nouns
        assert table is not None
        return table[cls]

    @property
    def extra_words(self) -> tuple[str, ...]:
        """Words the family writes that the base world's vocabulary lacks, in a fixed order."""
        base = set(V.all_words())
        tables = [self.nouns or {}, self.adjectives or {}]
        new = [*ARTICLES, *self.verbs, *(w for t in tables for c in sorted(t) for w in t[c])]
        return tuple(dict.fromkeys(w for w in new if w not in base))

    def is_heldout(self, verb: str, word: str) -> bool:
        """Held-out (verb, deciding word) pairs never appear in training; probes test them."""
        return _stable_fraction(self.name, verb, word) < self.heldout_fraction

    def _event(self, rng: random.Random, cls: str, heldout: bool | None) -> tuple[str, list[str]]:
        """(verb, [adjective?] noun) of class ``cls``; ``heldout``: the split its pair must be in
        (None: training, i.e. not heldout)."""
        adjective = rng.random() < self.p_adjective
        while True:
            verb, word = rng.choice(self.verbs), rng.choice(self.words(cls, adjective))
            if self.is_heldout(verb, word) == bool(heldout):
                break
        if adjective:
            return verb, [word, rng.choice(CONSONANT_NOUNS + VOWEL_NOUNS)]
        return verb, [word]

    # ---- corpus generation ---------------------------------------------------------------
    def emit(self, rng: random.Random, state: dict[str, str], support: float,
             p_reuse: float | None = None) -> list[str]:
        """One training sentence. ``state``, ``support`` and ``p_reuse`` (the induction families'
        knobs) are ignored: the family's own ``an_support`` sets its rule support."""
        cls = "vowel" if rng.random() < self.p_vowel else "consonant"
        verb, rest = self._event(rng, cls, heldout=False)
        article = "an" if cls == "vowel" and rng.random() < self.an_support else "a"
        name = rng.choice(V.FEMININE_NAMES + V.MASCULINE_NAMES)
        return [name, verb, article, *rest, "."]

    # ---- probes --------------------------------------------------------------------------
    def battery(self, n_per_cell: int = 64, n_neutral: int = 32, seed: int = 0) -> list[ProbeItem]:
        """Conflict (vowel-initial word: *an* vs *a*) and agree (consonant-initial: *a* vs *an*)
        items on train and heldout (verb, word) splits. Each prefix is 0-2 filler sentences then
        ``<name> <verb>``; the continuations are the article and the words after it. No neutral
        items (the prior is frequency, not a cue)."""
        rng = random.Random(f"{self.name}/battery/{seed}")
        items: list[ProbeItem] = []
        for split in ("heldout", "train"):
            for condition, cls in (("conflict", "vowel"), ("agree", "consonant")):
                for i in range(n_per_cell):
                    verb, rest = self._event(rng, cls, heldout=split == "heldout")
                    n_gap = rng.randrange(3)
                    words = [w for _ in range(n_gap) for w in filler_sentence(rng)]
                    words += [rng.choice(V.FEMININE_NAMES + V.MASCULINE_NAMES), verb]
                    rule, prior = self.rule_answer[cls], self.prior_answer(cls)
                    items.append(ProbeItem.model_validate(dict(
                        family=self.name, condition=condition, probe=f"{self.name}.{condition}", split=split,
                        template_id=f"{verb}/gap{n_gap}", prefix=" ".join(words),
                        correct=" " + " ".join([rule, *rest]), distractor=" " + " ".join([prior, *rest]),
                        chance=0.5, item_id=f"{self.name}.{condition}/{split}/{i:04d}", category="rule_vs_prior",
                        cue_class=cls)))
        return items


A_AN = RULES.register("a_an", ArticleRule(
    name="a_an",
    description="an before a vowel-initial word, a before a consonant-initial one "
                "(prior: a, far more frequent overall)",
    cue_classes={"consonant": CONSONANT_NOUNS + CONSONANT_ADJECTIVES, "vowel": VOWEL_NOUNS + VOWEL_ADJECTIVES},
    rule_answer={"consonant": "a", "vowel": "an"},
    kind="a_an",
    onsets={"consonant": "bcdfghjklmnpqrstvwxyz", "vowel": "aeiou"},
    # frame bigrams (rule form, prior form), the paper's exact bigram count: "an apple" vs "a apple"
    frames={"consonant": tuple((f"a {w}", f"an {w}") for w in CONSONANT_NOUNS + CONSONANT_ADJECTIVES),
            "vowel": tuple((f"an {w}", f"a {w}") for w in VOWEL_NOUNS + VOWEL_ADJECTIVES)},
    nouns={"consonant": CONSONANT_NOUNS, "vowel": VOWEL_NOUNS},
    adjectives={"consonant": CONSONANT_ADJECTIVES, "vowel": VOWEL_ADJECTIVES},
    source="built-in world (runner.world.articles)",
))


def world_words(families) -> list[str]:
    """The world's vocabulary for a corpus that draws ``families`` (names): the base words in their
    fixed order, then each family's ``extra_words`` (so every base word keeps its id)."""
    out = V.all_words()
    for name in families:
        for w in getattr(RULES.get(name), "extra_words", ()):
            if w not in out:
                out.append(w)
    return out
