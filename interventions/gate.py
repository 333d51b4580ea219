"""The disjointness gate: injected evidence must not contain what the probes ask.

Run before any training on an intervened stream. It fails, naming the offending string, when
- an injected cue word is a probe cue (a cue word that occurs in any probe or margin prompt), or
- a probe prefix or margin prompt (every battery item's prefix: conflict items are the CM
  prompts, neutral items the PM prompts) occurs verbatim in the injected text.

A rescue lexicon (:func:`check_lexicon`, run before its documents are made) fails the gate when
one of its cue words is a cue word of a probed family (probe or rescue cues of another family)
or occurs in a probe prompt, or when one of its frames, filled with a class's answer,
contains a cue word of any family or a battery frame (``because she``, ``an apple``).

The text check is exact and cheap: a prefix can occur in the injected text only if every one of
its tokens occurs there, so only prefixes that pass that token filter are searched for in the
injected documents.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from runner.world.batteries import ProbeItem
from runner.world.rules import RULES
from runner.world.rvp import RescueLexicon, RuleVsPrior

from .registry import InterventionError


class GateError(InterventionError):
    """Injected evidence overlaps the probes; the message names the string."""


def probe_cues(items: Sequence[ProbeItem]) -> set[str]:
    """Cue words (of any registered family, probe or rescue cues) that occur in probe prompts."""
    cues = {c for name in RULES for fam in [RULES.get(name)] for cls in fam.cue_classes
            for c in fam.counted_cues(cls)}
    return {w for it in items for w in it.prefix.split() if w in cues}


def check_disjoint(items: Sequence[ProbeItem], injected_cues: Iterable[str], texts,
                   rows: np.ndarray | None = None, tokenizer=None) -> None:
    """Raise :class:`GateError` on the first overlap; return None when injection and probes are
    disjoint. ``texts``: the injected documents, or a callable returning them (only called when
    some prompt passes the token filter); ``rows``/``tokenizer`` (the tokenized texts) enable the
    token filter."""
    pc = probe_cues(items)
    for cue in injected_cues:
        if cue in pc:
            raise GateError(f"disjointness gate: injected cue {cue!r} is a probe cue; injected evidence must use "
                            "cue words no probe uses (the family's rescue_cues)")
    if rows is not None and tokenizer is not None:
        present = set(np.unique(rows).tolist())
        suspects = [it for it in items
                    if set(tokenizer.encode(it.prefix.strip()).ids) <= present]
    else:
        suspects = list(items)
    if not suspects:
        return
    docs = "\n".join(texts() if callable(texts) else texts)
    for it in suspects:
        if it.prefix.strip() in docs:
            kinds = {"conflict": "margin (CM) prompt", "neutral": "prior-pull (PM) prompt"}
            kind = kinds.get(it.condition, "probe prefix")
            raise GateError(f"disjointness gate: {kind} of {it.item_id} occurs in injected text: {it.prefix.strip()!r}")


def _all_cues(skip: RescueLexicon, families) -> dict[str, str]:
    """The cue words (probe and rescue cues) of ``families`` -> the family, ``skip``'s own rescue
    cues left out when they are the family's registered rescue cues (a built-in family's)."""
    own = set(skip.cue_words())
    out = {}
    for name in families:
        fam = RULES.get(name)
        for cls in fam.cue_classes:
            for w in fam.counted_cues(cls):
                if not (name == skip.family and w in own and w not in fam.cue_classes[cls]):
                    out.setdefault(w, name)
    return out


def check_lexicon(lex: RescueLexicon, items: Sequence[ProbeItem], families: Iterable[str] | None = None) -> None:
    """Raise :class:`GateError` when the rescue lexicon ``lex`` overlaps a probe (see the module
    docstring): a cue word that is a cue of a probed family (``families``: by default the
    families of ``items`` and the lexicon's own; every registered family for the shipped
    lexicons' check) or a word of a probe prompt, or a frame that holds such a cue word or a
    battery frame of any family."""
    names = list(dict.fromkeys([*(families if families is not None else (it.family for it in items)), lex.family]))
    cues = _all_cues(lex, [n for n in names if n in RULES])
    prompt_words = {w for it in items for w in it.prefix.split()}
    for w in lex.cue_words():
        if w in cues or w in prompt_words:
            where = f"a cue of {cues[w]}" if w in cues else "a word of a probe prompt"
            raise GateError(f"disjointness gate: rescue cue {w!r} of {lex.family} is {where}; pick cue words no "
                            "family and no probe uses (runner/world/lexicons/rvp4_rescue.json)")
    forms = {form for name in RULES if isinstance(fam := RULES.get(name), RuleVsPrior)
             for pairs in fam.frames.values() for pair in pairs for form in pair}
    for frame in lex.frames:
        for answer in lex.answers.values():
            text = " " + frame.replace("{cue}", " ").replace("{answer}", answer) + " "
            hit = [w for w in text.split() if w in cues] or [f for f in sorted(forms) if f" {f} " in text]
            if hit:
                raise GateError(f"disjointness gate: rescue frame {frame!r} of {lex.family} holds "
                                f"{'cue word' if hit[0] in cues else 'battery frame'} {hit[0]!r}; rewrite the frame "
                                "without probe cues and frames (runner/world/lexicons/rvp4_rescue.json)")
