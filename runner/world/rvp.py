"""Rule-versus-prior families: lexicon-based rules that can be counted on any text.

A family of the paper's battery (``rvp4.jsonl``) pairs a rule with a frequent surface prior:
after a feminine cue (a girl's name, *mom*) the rule says *she*, the prior says *he*; before a
vowel-initial word the rule says *an*, the prior *a*. Each :class:`RuleVsPrior` holds, per cue
class, its cue words and its rule answer (the prior answer is the other class's rule answer),
the frames of its battery, and how its support is counted (``kind``):

- ``windowed`` (cue before the answer: pronoun and reflexive families): modes ``windowed`` (the
  first rule-or-prior answer within k tokens after a cue) and ``frame`` (the battery's frame
  bigrams: last prefix word + continuation, rule form vs prior form).
- ``a_an`` (the answer comes before the word that decides it): modes ``a_an`` (*an* / *a* right
  before a word whose first letter is in the class's ``onsets``) and ``frame``.

The counters live in :mod:`runner.data.rvp_support`. Cue words and frames come from the battery
(:func:`derive_from_battery`; the battery's own cues and frames define what is counted, as in the
paper); kinds, class names and onsets are data in ``lexicons/rvp4.json``, which also ships the
lists derived from the reference battery, so counting needs no battery file. The families are
registered in :data:`runner.world.rules.RULES` beside the built-in world's two families, under the
battery's names, so a battery attaches to a run by family name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from runner.world.batteries import ProbeItem
from runner.world.rules import RULES, RuleFamily

KINDS = {"windowed": ("windowed", "frame"), "a_an": ("a_an", "frame")}
LEXICON = Path(__file__).with_name("lexicons") / "rvp4.json"
PAPER = "paper"  # the alias of PAPER_FAMILIES on the command line


class LexiconError(ValueError):
    """A family has no lexicon, or a battery cannot be read as one; the message names the fix."""


@dataclass(frozen=True)
class RuleVsPrior(RuleFamily):
    """A lexicon-based rule family (see the module docstring). ``frames``: per class, the
    battery's (rule form, prior form) frame bigrams; ``onsets``: per class, the first letters of
    the words that select the class's answer (``a_an`` families only)."""

    kind: str = "windowed"
    frames: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    onsets: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LexiconError(f"{self.name}: kind {self.kind!r} is not one of {sorted(KINDS)}")
        if tuple(self.support_modes) != KINDS[self.kind]:
            object.__setattr__(self, "support_modes", KINDS[self.kind])
        if set(self.rule_answer) != set(self.cue_classes) or len(set(self.rule_answer.values())) != 2:
            raise LexiconError(f"{self.name}: needs two cue classes with different rule answers, "
                               f"got {self.rule_answer}")
        if self.kind == "windowed" and not all(self.cue_classes.values()):
            empty = [c for c, v in self.cue_classes.items() if not v]
            raise LexiconError(f"{self.name}: cue class(es) {empty} have no cue words; list them under "
                               f"'cues' in {LEXICON.name} or derive them from a battery (derive_from_battery)")
        if self.kind == "a_an" and set(self.onsets) != set(self.cue_classes):
            raise LexiconError(f"{self.name}: an a_an family needs onset letters for every class "
                               f"{sorted(self.cue_classes)}, got {sorted(self.onsets)}")

    def battery(self, n_per_cell: int = 64, n_neutral: int = 32, seed: int = 0) -> list[ProbeItem]:
        raise LexiconError(f"{self.name} is a rule-versus-prior family: its probes come from a battery file, "
                           "not a generator; pass the battery (probes.battery, e.g. rvp4.jsonl)")


# ---- the battery's cues and frames --------------------------------------------------------------
def _class_of(item: ProbeItem, classes: dict[str, str]) -> str:
    first = item.correct.split()[0]
    for cls, answer in classes.items():
        if answer == first:
            return cls
    raise LexiconError(f"{item.item_id}: correct {item.correct!r} starts with none of the rule answers "
                       f"{classes}; fix 'classes' of {item.family} in {LEXICON.name}")


def _prefix_cues(items: Sequence[ProbeItem]) -> dict[str, str]:
    """item_id -> cue word: the one prefix word that varies among items of the same template
    (``"Sue cried because"`` / ``"Lily cried because"``: the name; ``"The mom smiled because"``:
    the noun)."""
    groups: dict[tuple, list[ProbeItem]] = defaultdict(list)
    for it in items:
        groups[(it.template_id, it.split, len(it.prefix.split()))].append(it)
    out: dict[str, str] = {}
    for (tid, split, _), group in sorted(groups.items()):
        words = [it.prefix.split() for it in group]
        varying = [i for i in range(len(words[0])) if len({w[i] for w in words}) > 1]
        if len(varying) != 1:
            raise LexiconError(f"{group[0].family}: template {tid!r} ({split}) has {len(varying)} varying prefix "
                               f"words across {len(group)} items; a cue slot needs exactly one; list the cues "
                               f"in {LEXICON.name} instead")
        for it, w in zip(group, words):
            out[it.item_id] = w[varying[0]]
    return out


def derive_from_battery(items: Sequence[ProbeItem], kind: str, classes: dict[str, str]) -> dict:
    """``{"cues": {class: [words]}, "frames": {class: [[rule form, prior form]]}}`` of one
    family's battery items (conflict and agree). Cues: the varying prefix word of each template
    (``windowed``) or the word after the article of the correct continuation (``a_an``). Frames,
    as the paper's bigram count: the prefix's last word + the continuation, correct vs distractor."""
    items = [it for it in items if it.condition in ("conflict", "agree")]
    if not items:
        raise LexiconError("no conflict or agree items to derive a lexicon from")
    slot = _prefix_cues(items) if kind == "windowed" else {}
    cues: dict[str, set[str]] = {c: set() for c in classes}
    frames: dict[str, set[tuple[str, str]]] = {c: set() for c in classes}
    for it in items:
        cls = _class_of(it, classes)
        cues[cls].add(slot[it.item_id] if kind == "windowed" else it.correct.split()[1])
        last = it.prefix.split()[-1]
        frames[cls].add((f"{last} {it.correct.strip()}", f"{last} {it.distractor.strip()}"))
    return {"cues": {c: sorted(v) for c, v in cues.items()},
            "frames": {c: [list(p) for p in sorted(v)] for c, v in frames.items()}}


# ---- families ----------------------------------------------------------------------------------
def _spec_table() -> dict:
    return json.loads(LEXICON.read_text())


def family_from_spec(name: str, spec: dict, source: str = "") -> RuleVsPrior:
    """A :class:`RuleVsPrior` from one entry of the lexicon file (or a derived one)."""
    try:
        return RuleVsPrior(
            name=name, description=spec.get("description", ""),
            cue_classes={c: tuple(spec["cues"][c]) for c in spec["classes"]},
            rule_answer=dict(spec["classes"]), kind=spec["kind"],
            frames={c: tuple((r, p) for r, p in spec["frames"].get(c, ())) for c in spec["classes"]},
            onsets=dict(spec.get("onsets", {})), source=source or spec.get("source", ""))
    except KeyError as e:
        raise LexiconError(f"{name}: lexicon entry lacks {e}; see docs/families.md for the fields") from None


def families_from_battery(items: Iterable[ProbeItem], names: Iterable[str] | None = None,
                          source: str = "battery") -> dict[str, RuleVsPrior]:
    """Families whose cues and frames are this battery's (kinds and classes from the lexicon
    file). A battery family with no lexicon entry is an error that names the fix."""
    items = list(items)
    by_family: dict[str, list[ProbeItem]] = defaultdict(list)
    for it in items:
        by_family[it.family].append(it)
    table = _spec_table()["families"]
    wanted = list(names) if names is not None else sorted(by_family)
    out: dict[str, RuleVsPrior] = {}
    for name in wanted:
        if name not in table:
            raise LexiconError(f"battery family {name!r} has no lexicon: add an entry (kind, classes, description) "
                               f"for it to runner/world/lexicons/{LEXICON.name} (docs/families.md), or leave it out "
                               f"of --families; families with a lexicon: {', '.join(sorted(table))}")
        if name not in by_family:
            raise LexiconError(f"family {name!r} has no items in the battery; its families: {sorted(by_family)}")
        spec = dict(table[name])
        spec.update(derive_from_battery(by_family[name], spec["kind"], spec["classes"]))
        out[name] = family_from_spec(name, spec, source)
    return out


def _register_all() -> tuple[str, ...]:
    doc = _spec_table()
    for name, spec in doc["families"].items():
        RULES.register(name, family_from_spec(name, spec, doc["source"]))
    return tuple(doc["families"])


PAPER_FAMILIES: tuple[str, ...] = _register_all()


def expand_families(names: Iterable[str]) -> tuple[str, ...]:
    """Names with ``paper`` replaced by :data:`PAPER_FAMILIES`, repeats dropped, order kept."""
    out: list[str] = []
    for n in names:
        for f in (PAPER_FAMILIES if n == PAPER else (n,)):
            if f not in out:
                out.append(f)
    return tuple(out)


# ---- rescue lexicons ---------------------------------------------------------------------------
# The paper's rescue injects rule evidence in cue words and frames no probe uses. They are data
# beside the families' lexicon, in their own file (``rvp4.json`` stays the battery's derivation,
# with its sha256), read only by the rescue edit: they are not the families' cues, so the support
# every other count reports is unchanged by their existence.
RESCUE_LEXICON = LEXICON.with_name("rvp4_rescue.json")


@dataclass(frozen=True)
class RescueLexicon:
    """One family's rescue evidence: ``cues`` per class (cue words the injected documents use),
    ``answers`` per class (the rule's answer), ``frames`` (sentences with one ``{cue}`` and one
    ``{answer}`` slot, words separated by spaces) and ``fills`` (other slots, e.g. ``{key}``, and
    the words drawn for them)."""

    family: str
    cues: dict[str, tuple[str, ...]]
    answers: dict[str, str]
    frames: tuple[str, ...]
    fills: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.cues) != set(self.answers) or not all(self.cues.values()):
            raise LexiconError(f"{self.family}: rescue cues needed for every class {sorted(self.answers)}, got "
                               f"{ {c: len(v) for c, v in self.cues.items()} }; fix {RESCUE_LEXICON.name}")
        bad = [f for f in self.frames if f.count("{cue}") != 1 or f.count("{answer}") != 1]
        if not self.frames or bad:
            raise LexiconError(f"{self.family}: every rescue frame needs one {{cue}} and one {{answer}} slot, got "
                               f"{bad or 'no frame'}; fix {RESCUE_LEXICON.name}")

    def cue_words(self) -> tuple[str, ...]:
        return tuple(w for c in sorted(self.cues) for w in self.cues[c])


def rescue_lexicon(name: str) -> RescueLexicon:
    """The rescue lexicon of the rule-versus-prior family ``name`` (``lexicons/rvp4_rescue.json``);
    LexiconError naming the fix when it has none."""
    table = json.loads(RESCUE_LEXICON.read_text())["families"]
    fam = RULES.get(name)
    if name not in table:
        raise LexiconError(f"{name} has no rescue lexicon: add rescue cues per class and frames for it to "
                           f"runner/world/lexicons/{RESCUE_LEXICON.name}; families with one: "
                           f"{', '.join(sorted(table))}")
    spec = table[name]
    return RescueLexicon(name, {c: tuple(spec["cues"].get(c, ())) for c in fam.rule_answer},
                         dict(fam.rule_answer), tuple(spec["frames"]))
