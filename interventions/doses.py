"""The paper's two doses: ``kill:<p>`` (or ``kill:ratio=<r>``) and ``rescue:<d>`` (d in units of delta).

- ``kill:p``: the paper's kill (:mod:`interventions.kill`): every targeted-class cue whose first
  answer within the window is the rule's has that one answer token replaced by the prior's,
  independently with probability p; eligible sites found on the original stream; token count and
  every other token byte-identical (checked on every build). ``kill:ratio=r`` solves p for the
  closed-form post-edit ratio r on the corpus at hand. The manifest records, per family and
  targeted class, S, C, the eligible and flipped events, the closed-form and realised ratios and
  the recount on the edited stream. On a real-text (``built:``) corpus the same edit runs on its
  flat stream and is written in the real-text format (:meth:`Kill.edit_stream`,
  :mod:`interventions.textstream`).
- ``rescue:d``: the paper's rescue (:mod:`interventions.rescue`): symmetric documents of rule
  evidence, d x delta targeted-class events per token (delta: ``intervention.reference``, the
  paper's 1.67175e-3 by default), token-matched by default; injected events counted after
  tokenization must equal the target; the disjointness gate runs before the stream is written.
  On a real-text (``built:``) corpus the documents are text tokenized with the corpus's tokenizer
  and spliced into its flat stream at seeded document boundaries, whole neutral documents removed
  to keep the token count (:mod:`interventions.textrescue`; the rule-versus-prior families' rescue
  cues and frames: ``runner/world/lexicons/rvp4_rescue.json``).

ungrok's earlier edits are ``kill-contested`` and ``rescue-contest`` (:mod:`interventions.contested`).
All are discovered by :data:`runner.doses.DOSES` through the entry points ``ungrok.doses``.
"""

from __future__ import annotations

import random

import numpy as np

from runner.config import CorpusConfig, RunConfig
from runner.data.corpora import build_corpus, load_corpus
from runner.data.matching import TokenStream, TokenTable
from runner.data.rvp_support import class_counts, count_rvp_rows, family_sites
from runner.doses import parse_dose_key
from runner.scoring import battery_for
from runner.world.rules import RULES, InductionRule, RuleFamily

from .base import Dose, corpus_stream
from .contested import KILL_CONTESTED, RESCUE_CONTEST, KillContested, RescueContest  # noqa: F401
from .gate import check_disjoint
from .kill import apply_flips, as_rvp, check_in_place, draw_flips, kill_report, plan_kill, solve_rate, targets_of
from .registry import InterventionError
from .rescue import PAPER_DELTA, document, plan_slots
from .textrescue import rescue_text
from .textstream import editable_copy, flat_stream


class Kill(Dose):
    """The paper's kill at rate p (0 < p <= 1), or at the rate that gives a target ratio."""

    name = "kill"
    level_keys = ("ratio",)

    def check_level(self, level: float) -> None:
        if not 0.0 < level <= 1.0:
            raise ValueError(f"kill rate {level} must be in (0, 1]")

    def check_keyed(self, key: str, value: float) -> None:
        if value < 0:
            raise ValueError(f"kill target {key} {value} must be >= 0")

    text_refusal = ""  # kill edits a real-text stream too (edit_stream)

    def edit(self, cfg: RunConfig, level: float, base, tok) -> tuple[np.ndarray, dict]:
        stream, posmap = corpus_stream(base)
        table = TokenTable.of(tok)
        plans, per_family = self._plan(cfg, level, stream, table, base.path)
        edited, changed = self._apply(cfg, stream, stream.ids.copy(), table, plans, per_family)
        flat = np.asarray(base.rows).reshape(-1).copy()
        flat[posmap] = edited.ids
        rows = flat.reshape(base.rows.shape)
        if int((rows != np.asarray(base.rows)).sum()) != changed:
            raise RuntimeError("kill moved tokens; this is a bug")
        return rows, {"per_family": per_family, "tokens_changed": changed}

    def edit_stream(self, cfg: RunConfig, level: float, base) -> tuple[TokenStream, dict]:
        """The same edit on a real-text corpus's whole flat stream: sites planned on the
        memory-mapped original, every family's flips written into one copy of it."""
        stream = flat_stream(base)
        table = TokenTable.of(base.tokenizer)
        plans, per_family = self._plan(cfg, level, stream, table, base.path)
        edited, changed = self._apply(cfg, stream, editable_copy(base), table, plans, per_family)
        return edited, {"per_family": per_family, "tokens_changed": changed}

    def _plan(self, cfg: RunConfig, level: float, stream: TokenStream, table: TokenTable, where) -> tuple[list, dict]:
        """Each dosed family's eligible sites on the original ``stream`` and its seeded flips (at
        the level's rate, or the rate solved for ``kill:ratio=``), and its report."""
        _, key, _ = parse_dose_key(cfg.dose)
        plans, per_family = [], {}
        for f in cfg.dose_families:
            fam = RULES.get(f)
            plan = plan_kill(stream, fam, table, targets_of(fam, cfg.intervention.classes))
            rule = sum(v["rule"] for v in plan.before.values())
            prior = sum(v["prior"] for v in plan.before.values())
            try:
                rate = solve_rate(rule, prior, level) if key == "ratio" else level
            except ValueError as e:
                raise InterventionError(f"dose {cfg.dose}: {f} {list(plan.classes)}: {e}") from None
            flips = draw_flips(plan, rate, cfg.intervention.seed)
            plans.append((plan, flips))
            per_family[f] = kill_report(plan, flips, rate) | ({"target_ratio": level} if key else {})
        if not any(flips.any() for _, flips in plans):
            raise InterventionError(f"dose {cfg.dose}: no eligible rule event of {list(cfg.dose_families)} "
                                    f"(classes {list(cfg.intervention.classes) or 'default'}) in {where}")
        return plans, per_family

    def _apply(self, cfg: RunConfig, stream: TokenStream, out: np.ndarray, table: TokenTable, plans: list,
               per_family: dict) -> tuple[TokenStream, int]:
        """Write every family's flips into ``out`` (a copy of ``stream.ids``), check that exactly
        the flipped tokens changed, add the recount; the edited stream and the tokens changed."""
        for plan, flips in plans:
            apply_flips(stream.ids, plan, flips, out=out)
        allflips = np.unique(np.concatenate([plan.positions[flips] for plan, flips in plans]))
        check_in_place(stream.ids, out, allflips, f"dose {cfg.dose}")
        edited = TokenStream(out, stream.starts)
        self._recount(edited, table, per_family, single=len(per_family) == 1)
        return edited, int(len(allflips))

    @staticmethod
    def _recount(edited: TokenStream, table: TokenTable, per_family: dict, single: bool) -> None:
        """Add the recount of each targeted class on the edited stream; with one family, it must
        equal the realised ratio exactly (with several, one family's flips may move another's events)."""
        for f, rep in per_family.items():
            fam = as_rvp(RULES.get(f))
            counts = class_counts(family_sites(edited, fam, table, rep["mode"]))
            for cls, c in rep["classes"].items():
                rc = counts[cls]
                c["recount"] = {"rule": rc["rule"], "prior": rc["prior"],
                                "ratio": rc["rule"] / rc["prior"] if rc["prior"] else None}
                if single and (rc["rule"], rc["prior"]) != (c["rule"] - c["flipped_events"],
                                                            c["prior"] + c["flipped_events"]):
                    raise RuntimeError(f"kill of {f}/{cls}: recount {rc} differs from the edit's; this is a bug")


class Rescue(Dose):
    """The paper's rescue at d x delta (d > 0)."""

    name = "rescue"
    text_refusal = ""  # rescue injects into a real-text stream too (edit_stream)

    def check_level(self, level: float) -> None:
        if not level > 0.0:
            raise ValueError(f"rescue dose {level} must be > 0 (in units of delta)")

    @staticmethod
    def delta(cfg: RunConfig, fam: RuleFamily, target: str, corpora_dir) -> dict:
        """delta: the targeted class's windowed rule events per token of the reference."""
        ref = cfg.intervention.reference
        if ref == "paper":
            return {"reference": "paper (TinyStories)", "per_token": PAPER_DELTA}
        try:
            return {"reference": "given", "per_token": float(ref)}
        except ValueError:
            pass
        path = build_corpus(CorpusConfig(name=ref, seed=cfg.corpus.seed, n_stories=cfg.corpus.n_stories,
                                         story_tokens=cfg.corpus.story_tokens), corpora_dir)
        c = load_corpus(path)
        counts = count_rvp_rows(c.rows, c.tokenizer, [as_rvp(fam)], pad_id=c.pad_id)[fam.name][target][
            "a_an" if as_rvp(fam).kind == "a_an" else "windowed"]
        return {"reference": str(path), "rule_events": counts["rule"], "n_tokens": c.n_tokens,
                "per_token": counts["rule"] / c.n_tokens}

    def edit(self, cfg: RunConfig, level: float, base, tok) -> tuple[np.ndarray, dict]:
        iv = cfg.intervention
        factor = cfg.train.steps / ((iv.end_step or cfg.train.steps) - iv.start_step) if iv.whole_dose else 1.0
        rows = np.array(base.rows)
        pad, width = base.pad_id, rows.shape[1]
        order = _neutral_order(base, [RULES.get(f) for f in cfg.dose_families], iv.seed)
        items, per_family, added = battery_for(cfg), {}, []
        for f in cfg.dose_families:
            fam = _rescuable(RULES.get(f), tok, cfg.dose)
            (target,) = targets_of(fam, iv.classes)[:1]
            d = self.delta(cfg, fam, target, base.path.parent)
            n = int(round(level * d["per_token"] * base.n_tokens * factor))
            if n == 0:
                raise InterventionError(f"dose {cfg.dose}: {level:g} x delta ({d['per_token']:.3g}/token) x "
                                        f"{base.n_tokens:,} tokens rounds to 0 events for {f}; raise the dose")
            lengths = (rows != pad).sum(1)
            slots = plan_slots(fam, n, lengths, order, None if iv.matched else width)
            rng = random.Random(f"ungrok/rescue-paper/{f}/{iv.seed}")
            docs = [" ".join(document(fam, rng, L, cl)) for L, cl in zip(slots.lengths, slots.classes)]
            inj = np.full((len(docs), width), pad, dtype=rows.dtype)
            for i, enc in enumerate(tok.encode_batch(docs)):
                if len(enc.ids) != slots.lengths[i]:
                    raise InterventionError(f"dose {cfg.dose}: an injected document tokenizes to {len(enc.ids)} "
                                            f"tokens, not {slots.lengths[i]}; rescue needs the world's tokenizer")
                inj[i, : len(enc.ids)] = enc.ids
            got = count_rvp_rows(inj, tok, [as_rvp(fam)], pad_id=pad, multi_token_cues=True)[fam.name]
            if any((c["windowed"]["rule"], c["windowed"]["prior"]) != (n, 0) for c in got.values()):
                raise RuntimeError(f"{f}: injected {got}, asked for {n} rule events per class; this is a bug")
            check_disjoint(items, tuple(w for c in fam.cue_classes for w in fam.rescue_cues[c]),
                           lambda docs=docs: docs, inj, tok)
            removed = [r for r in slots.rows if r >= 0]
            per_family[f] = {"target_class": target, "delta": d, "events_per_class": n, "whole_dose_factor": factor,
                             "documents": len(docs), "injected_tokens": int((inj != pad).sum()),
                             "removed_rows": len(removed), "removed_tokens": int(lengths[removed].sum())}
            if iv.matched:
                rows[removed] = inj
                order = order[~np.isin(order, removed)]
            else:
                added.append(inj)
        return self._finish(cfg, base, rows, added, per_family, tok)

    def edit_stream(self, cfg: RunConfig, level: float, base) -> tuple[TokenStream, dict]:
        """The paper's rescue on a real-text corpus's flat stream (:func:`interventions.textrescue.rescue_text`)."""
        return rescue_text(cfg, level, base, self.delta)

    @staticmethod
    def _finish(cfg: RunConfig, base, rows, added, per_family: dict, tok) -> tuple[np.ndarray, dict]:
        if added:
            rows = np.concatenate([rows, *added])
            rows = rows[np.random.default_rng([cfg.intervention.seed, 7]).permutation(len(rows))]
        elif int((rows != base.pad_id).sum()) != base.n_tokens or rows.shape != base.rows.shape:
            raise RuntimeError("a token-matched rescue changed the token count; this is a bug")
        fams = [as_rvp(RULES.get(f)) for f in per_family]
        before = count_rvp_rows(base.rows, tok, fams, pad_id=base.pad_id, multi_token_cues=True)
        after = count_rvp_rows(rows, tok, fams, pad_id=base.pad_id, multi_token_cues=True)
        for f, rep in per_family.items():
            t = rep["target_class"]
            rep["windowed_before"], rep["windowed_after"] = before[f][t]["windowed"], after[f][t]["windowed"]
        return rows, {"dose": cfg.dose, "matched": cfg.intervention.matched, "per_family": per_family,
                      "base_rows": int(len(base.rows)), "base_tokens": base.n_tokens,
                      "tokens": int((rows != base.pad_id).sum())}


def _rescuable(fam, tok, dose: str) -> InductionRule:
    if not isinstance(fam, InductionRule) or not fam.rescue_cues or not fam.rescue_template:
        raise InterventionError(f"dose {dose}: {fam.name} has no rescue cues and frame disjoint from the probes "
                                "(rescue_cues, rescue_template): the paper's rescue injects the built-in families only")
    missing = [w for c in fam.cue_classes for w in fam.rescue_cues[c] if tok.token_to_id(w) is None]
    if missing:
        raise InterventionError(f"dose {dose}: the corpus tokenizer lacks the rescue words of {fam.name} "
                                f"(e.g. {missing[0]!r}); rescue needs the built-in world's vocabulary")
    return fam


def _neutral_order(base, fams, seed: int) -> np.ndarray:
    """Row indices, rows with the fewest cues of ``fams`` first (seeded order among equals)."""
    stream, posmap = corpus_stream(base)
    table = TokenTable.of(base.tokenizer)
    width = base.rows.shape[1]
    cues = np.zeros(len(base.rows), np.int64)
    for fam in fams:
        fam = as_rvp(fam)
        s = family_sites(stream, fam, table, "a_an" if fam.kind == "a_an" else "windowed")
        np.add.at(cues, posmap[s.cue_start] // width, 1)
    return np.lexsort((np.random.default_rng([seed, 11]).random(len(cues)), cues))


def describe(generator: dict, g: dict) -> str:
    """One line of what a dose did to one family (``generator``: an intervened stream's manifest
    section; ``g``: its ``per_family`` entry), for ``ungrok corpus intervene``."""
    kind = generator["kind"]
    if kind == "kill":
        return "; ".join(f"{c}: {x['flipped_events']:,} of {x['eligible_events']:,} rule events flipped at "
                         f"p={g['rate']:.3g}, ratio {x['ratio_before']:.3g} -> {x['recount']['ratio']:.3g} "
                         f"(closed form {x['closed_form_ratio']:.3g})" for c, x in g["classes"].items())
    if kind == "rescue" and "removed" in generator:  # a real-text stream
        rm = generator["removed"]
        removed = ("appended" if rm is None
                   else f"{rm['documents']:,} neutral documents, {rm['tokens']:,} tokens removed")
        return (f"{g['events_per_class']:,} events per class in {g['documents']:,} documents "
                f"({g['injected_tokens']:,} tokens; {g['delta']['per_token']:.3g}/token x {generator['dose']}; "
                f"{removed}); {g['target_class']} {g['mode']} {g['before']['rule']:,}:{g['before']['prior']:,} -> "
                f"{g['after']['rule']:,}:{g['after']['prior']:,}")
    if kind == "rescue":
        return (f"{g['events_per_class']:,} events per class in {g['documents']:,} documents "
                f"({g['delta']['per_token']:.3g}/token x {generator['dose']}; {g['removed_rows']:,} rows replaced); "
                f"{g['target_class']} windowed {g['windowed_before']['rule']:,}:{g['windowed_before']['prior']:,} -> "
                f"{g['windowed_after']['rule']:,}:{g['windowed_after']['prior']:,}")
    if kind == "kill-contested":
        return f"{g['n_flipped']:,} of {sum(g['eligible'].values()):,} contested rule wins flipped"
    return (f"{g['injected_events']:,} contests injected in {g['injected_rows']:,} rows "
            f"({g['reference']['per_token']:.3g}/token x {generator['dose']:g})")


# The instances the dose registry discovers (entry points ``ungrok.doses`` in pyproject.toml).
KILL = Kill()
RESCUE = Rescue()
