"""Per-family edit functions: how a rule family's evidence is flipped (kill) or injected (rescue).

A rule family that wants kill and rescue registers one function in each registry under its own
name; the registries refuse duplicates. The built-in induction-keyed families register the
generic functions of :mod:`interventions.induction`.

- ``FLIPS[family](rows, family, tokenizer, rate, seed) -> FlipResult``: turn rule-winning
  events into counter-evidence *in place* (each flip replaces one token by one token, so token
  count and positions are preserved exactly).
- ``INJECTS[family](family, tokenizer, n_events, row_tokens, seed) -> InjectResult``: new rows
  carrying exactly ``n_events`` rule-winning events, in cue words and frames disjoint from every
  probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from jaxtyping import Int

from runner.registry import Registry


class InterventionError(ValueError):
    """An intervention cannot be applied; the message says why and what to do."""


@dataclass
class FlipResult:
    rows: Int[np.ndarray, "row pos"]
    eligible: dict[str, int]  # rule-winning events seen, per cue class
    flipped: dict[str, int]  # of which turned into counter-evidence

    @property
    def n_flipped(self) -> int:
        return sum(self.flipped.values())


@dataclass
class InjectResult:
    rows: Int[np.ndarray, "row pos"]
    events: int  # rule-winning events in the rows, counted by the support counter after tokenization
    cues: tuple[str, ...]  # every cue word the rows use

    def texts(self, tokenizer) -> list[str]:
        """The injected documents as text (decoded from the rows, padding dropped)."""
        pad = tokenizer.token_to_id("<pad>")
        return tokenizer.decode_batch([[t for t in r if t != pad] for r in self.rows.tolist()],
                                      skip_special_tokens=False)


FlipFn = Callable[..., FlipResult]
InjectFn = Callable[..., InjectResult]
FLIPS: Registry[FlipFn] = Registry("flip function")
INJECTS: Registry[InjectFn] = Registry("inject function")
