"""The disjointness gate: injected evidence must not contain what the probes ask.

Run before any training on an intervened stream. It fails, naming the offending string, when
- an injected cue word is a probe cue (a cue word that occurs in any probe or margin prompt), or
- a probe prefix or margin prompt (every battery item's prefix: conflict items are the CM
  prompts, neutral items the PM prompts) occurs verbatim in the injected text.

The text check is exact and cheap: a prefix can occur in the injected text only if every one of
its tokens occurs there, so only prefixes that pass that token filter are searched for in the
injected documents.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from runner.world.batteries import ProbeItem
from runner.world.rules import RULES

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
