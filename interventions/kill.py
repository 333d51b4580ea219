"""The paper's kill: flip a targeted class's rule answers to the prior's, in place, at rate p.

Li & Sreedhar (2026), "Interventions": *for every girl-name cue whose first pronoun within 16
tokens is she, flip that she to he independently with probability p (eligible sites found on the
original stream, girl class only, lower-case and capitalised forms). One token id replaced in
place.* For a/an: *an* -> *a* before vowel-initial words. The same edit for every family with a
rule and a prior (:class:`runner.world.rvp.RuleVsPrior`, or a built-in induction-keyed family read
as one through :func:`as_rvp`):

- **eligible sites**: the targeted classes' events whose deciding answer is the rule's (windowed:
  the first rule-or-prior answer within ``k`` tokens after the cue; a/an: the article before a
  word of the class's onsets), found by :func:`runner.data.rvp_support.family_sites` on the
  *original* stream, never on an edited one (so eligibility never depends on earlier flips). Two
  cues whose first answer is the same token share one site (one draw, one flip).
- **the flip**: one token id replaced by the prior's answer in the same surface form (``" She"``
  -> ``" He"``, ``"an"`` -> ``"a"``), independently with probability p per site (a generator seeded
  by (seed, family)). A site whose answer or prior form is not one token is left alone and counted
  as ``unflippable`` (token count and positions must never change).
- **ratios**: with S rule and C prior events of the targeted class before the edit, the
  closed-form post-edit ratio is (1 - p) S / (C + p S); the realised one is (S - F) / (C + F) for F
  flipped events, which the recount on the edited stream must equal exactly.
  ``kill:ratio=r`` solves p = (S - r C) / (S (1 + r)) on the corpus at hand.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from runner.data.matching import CHUNK, TokenStream, TokenTable, surface_forms
from runner.data.rvp_support import K, class_counts, family_sites
from runner.world.rules import RuleFamily
from runner.world.rvp import RuleVsPrior
from runner.world.targets import default_target, targets_of  # noqa: F401 (re-exported)

from .registry import InterventionError


def as_rvp(family: RuleFamily) -> RuleVsPrior:
    """A family as a rule-versus-prior family: itself, or (a built-in induction-keyed family) its
    cue words (probe and rescue cues) and rule answers under the windowed definition."""
    if isinstance(family, RuleVsPrior):
        return family
    return RuleVsPrior(name=family.name, description=family.description,
                       cue_classes={c: tuple(family.counted_cues(c)) for c in family.cue_classes},
                       rule_answer=dict(family.rule_answer), kind="windowed")


def edit_mode(family: RuleVsPrior) -> str:
    """The counting mode the edit reads: ``windowed`` (cue before answer) or ``a_an``."""
    return "a_an" if family.kind == "a_an" else "windowed"


def closed_form(rule: int, prior: int, p: float) -> float | None:
    """(1 - p) S / (C + p S): the paper's post-edit ratio; None when C + p S = 0."""
    den = prior + p * rule
    return (1 - p) * rule / den if den > 0 else None


def solve_rate(rule: int, prior: int, ratio: float) -> float:
    """The rate p whose :func:`closed_form` is ``ratio``; ValueError when no p in (0, 1] gets there."""
    if rule <= 0:
        raise ValueError("no rule event to flip")
    p = (rule - ratio * prior) / (rule * (1 + ratio))
    if not 0.0 < p <= 1.0:
        raise ValueError(f"target ratio {ratio:g} is not reachable from S={rule:,} rule / C={prior:,} prior events "
                         f"(ratio now {rule / max(prior, 1):.3g}); ask for a ratio below it and >= 0")
    return float(p)


@dataclass
class KillPlan:
    """A family's eligible sites on the original stream and their replacement ids."""

    family: str
    mode: str
    classes: tuple[str, ...]  # targeted classes
    positions: np.ndarray  # stream positions of the eligible answer tokens (unique, sorted)
    new_ids: np.ndarray  # the prior's token at each position
    events: np.ndarray  # events (cues) deciding on each position
    site_class: np.ndarray  # targeted class of each position (index into classes)
    unflippable: int  # eligible events whose answer or prior form is not one token
    before: dict[str, dict] = field(default_factory=dict)  # targeted class -> {rule, prior, cues, ratio}


def _prior_form_ids(fam: RuleVsPrior, table: TokenTable, forms: tuple[str, ...]) -> np.ndarray:
    """For each answer surface form, the one token of the other answer's same surface form (-1 none)."""
    (a, b) = fam.answers
    pair = {**dict(zip(surface_forms(a), surface_forms(b))), **dict(zip(surface_forms(b), surface_forms(a)))}
    out = np.full(len(forms), -1, dtype=np.int64)
    for i, f in enumerate(forms):
        src, dst = table.encode(f), table.encode(pair[f]) if f in pair else None
        if src is not None and dst is not None and len(src) == 1 and len(dst) == 1:
            out[i] = dst[0]
    return out


def plan_kill(stream: TokenStream, family: RuleFamily, table: TokenTable, classes: tuple[str, ...],
              k: int = K) -> KillPlan:
    """Where the paper's kill of ``family`` may flip (the targeted ``classes``), on ``stream``."""
    fam = as_rvp(family)
    mode = edit_mode(fam)
    s = family_sites(stream, fam, table, mode, k)
    idx = [s.classes.index(c) for c in classes]
    counts = class_counts(s)
    elig = s.answered & s.rule & np.isin(s.cls, idx)
    repl = _prior_form_ids(fam, table, s.forms)
    one = (s.answer_end == s.answer_start) & (repl[np.maximum(s.form, 0)] >= 0)
    ok = elig & one
    pos, first, n_ev = np.unique(s.answer_start[ok], return_index=True, return_counts=True)
    new = repl[s.form[ok][first]]
    lut = np.full(len(s.classes), -1, dtype=np.int64)
    lut[idx] = np.arange(len(idx))
    site_cls = lut[s.cls[ok][first]]
    return KillPlan(fam.name, mode, tuple(classes), pos, new, n_ev, site_cls, int((elig & ~one).sum()),
                    {c: counts[c] for c in classes})


def draw_flips(plan: KillPlan, rate: float, seed: int) -> np.ndarray:
    """Which sites flip: one independent U(0, 1) < rate per site, seeded by (seed, family)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"kill rate {rate} must be in [0, 1]")
    rng = np.random.default_rng([seed, zlib.crc32(plan.family.encode())])
    return rng.random(len(plan.positions)) < rate


def apply_flips(ids: np.ndarray, plan: KillPlan, flips: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The stream ``ids`` with the flipped sites' tokens replaced by the prior's: a copy, or
    ``out`` edited in place (a real-text stream is copied once and every family's flips written
    into that one copy)."""
    out = ids.copy() if out is None else out
    out[plan.positions[flips]] = plan.new_ids[flips]
    return out


def changed_positions(before: np.ndarray, after: np.ndarray, block: int = CHUNK) -> np.ndarray:
    """Positions where two equal-length streams differ, compared ``block`` tokens at a time (a
    memory-mapped stream is never read whole into memory)."""
    parts = [np.flatnonzero(after[i : i + block] != before[i : i + block]) + i for i in range(0, len(before), block)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def check_in_place(before: np.ndarray, after: np.ndarray, flipped: np.ndarray, what: str) -> None:
    """Exactly the ``flipped`` positions differ and the length is unchanged, or InterventionError."""
    changed = changed_positions(before, after) if len(after) == len(before) else None
    if changed is None or not np.array_equal(changed, np.unique(flipped)):
        raise InterventionError(f"{what}: {0 if changed is None else len(changed)} tokens changed for "
                                f"{len(np.unique(flipped))} flipped sites, or the length changed; this is a bug")


def kill_report(plan: KillPlan, flips: np.ndarray, rate: float) -> dict:
    """Per targeted class: S, C, eligible and flipped events and sites, the closed-form and the
    realised post-edit ratios (the recount is added by the caller)."""
    out = {}
    for ci, cls in enumerate(plan.classes):
        m = plan.site_class == ci
        rule, prior = plan.before[cls]["rule"], plan.before[cls]["prior"]
        flipped = int(plan.events[m & flips].sum())
        out[cls] = {"rule": rule, "prior": prior, "ratio_before": rule / prior if prior else None,
                    "eligible_sites": int(m.sum()), "eligible_events": int(plan.events[m].sum()),
                    "flipped_sites": int((m & flips).sum()), "flipped_events": flipped,
                    "closed_form_ratio": closed_form(rule, prior, rate),
                    "realised_ratio": (rule - flipped) / (prior + flipped) if prior + flipped else None}
    return {"mode": plan.mode, "rate": rate, "unflippable_events": plan.unflippable, "classes": out}
