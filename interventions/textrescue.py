"""The paper's rescue on a real-text (``built:``) corpus: symmetric documents, tokenized with the
corpus's tokenizer, spliced into its flat stream at seeded document boundaries.

Li & Sreedhar (2026): *inject symmetric girl->she and boy->he documents at d x delta; an equal
token count of neutral documents removed, so the corpus size is unchanged; injected names and
frames disjoint from every probe; post-injection ratio with injected names matched as full token
sequences.* For each dosed family:

- **lexicon**: a rule-versus-prior family's rescue lexicon (``runner/world/lexicons/
  rvp4_rescue.json``: cue words per class, frames with ``{cue}`` and ``{answer}`` slots), or a
  built-in induction-keyed family's ``rescue_cues`` and ``rescue_template`` (its ``{key}`` and
  ``{adj}`` slots drawn from the family's keys and the world's adjectives). The gate
  (:func:`interventions.gate.check_lexicon`) runs on it first, then on the documents' text.
- **events**: T = round(d x delta x base tokens [x steps / window steps with ``whole_dose``]) rule
  events of *every* class (symmetric), one frame sentence each (seeded cue and frame), in
  documents of :data:`PER_DOC` sentences with classes alternating (so each document is symmetric),
  sentence order shuffled.
- **tokens**: each document is ``[eot] + tokenizer(text)``, exactly as the corpus's own
  documents (:func:`runner.data.shards.encode_block`). The injected documents are counted with the
  support counter (windowed or a/an mode, the family's cues plus its rescue cues, cues of several
  tokens matched as sequences): rule events must equal T per class and prior events 0, or the
  build is refused naming what the tokenizer did.
- **token-matched** (default): whole *neutral* documents (no cue of the dosed families, rescue
  cues included) are removed in seeded order until the injected token count is reached; the last
  one is cut (its first tokens kept, a document still) so the removed count equals the injected
  count exactly and the stream keeps its length. If the neutral documents are too few, the build
  is refused. ``matched = false``: nothing is removed (the stream grows).
- **insertion**: each injected document goes before a seeded document boundary of the kept
  stream (or at its end); the rest of the stream keeps its order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from runner.data.matching import TokenStream, TokenTable, separator_ids
from runner.data.rvp_support import count_rvp, family_sites
from runner.scoring import battery_for
from runner.world import vocab as V
from runner.world.rules import RULES, InductionRule, RuleFamily
from runner.world.rvp import LexiconError, RescueLexicon, RuleVsPrior, rescue_lexicon

from .gate import check_disjoint, check_lexicon
from .kill import as_rvp, edit_mode, targets_of
from .registry import InterventionError
from .textstream import flat_stream

PER_DOC = 4  # rescue sentences per injected document (classes alternating: 2 of each)


def lexicon_for(fam: RuleFamily, dose: str) -> RescueLexicon:
    """The rescue lexicon of a dosed family (see the module docstring), or InterventionError."""
    if isinstance(fam, RuleVsPrior):
        try:
            return rescue_lexicon(fam.name)
        except LexiconError as e:
            raise InterventionError(f"dose {dose}: {e}") from None
    if isinstance(fam, InductionRule) and fam.rescue_cues and fam.rescue_template:
        return RescueLexicon(fam.name, {c: tuple(fam.rescue_cues[c]) for c in fam.cue_classes},
                             dict(fam.rule_answer), (" ".join(fam.rescue_template),),
                             {"{key}": tuple(fam.keys), "{adj}": tuple(V.ADJECTIVES)})
    raise InterventionError(f"dose {dose}: {fam.name} has no rescue cues and frames disjoint from the probes; "
                            "add it to runner/world/lexicons/rvp4_rescue.json")


def counting_family(fam: RuleFamily, lex: RescueLexicon) -> RuleVsPrior:
    """The family as the rescue counts it: its cues plus the lexicon's rescue cues (windowed);
    an a/an family counts by onset letters, so it is itself."""
    r = as_rvp(fam)
    if r.kind != "windowed":
        return r
    cues = {c: tuple(dict.fromkeys(r.cue_classes[c] + lex.cues[c])) for c in r.cue_classes}
    return RuleVsPrior(name=r.name, description=r.description, cue_classes=cues, rule_answer=dict(r.rule_answer),
                       kind=r.kind, frames=r.frames, onsets=r.onsets, source=r.source)


def sentence(lex: RescueLexicon, rng: random.Random, cls: str) -> str:
    frame = rng.choice(lex.frames)
    sub = {"{cue}": rng.choice(lex.cues[cls]), "{answer}": lex.answers[cls],
           **{slot: rng.choice(words) for slot, words in lex.fills.items()}}
    return " ".join(sub.get(w, w) for w in frame.split())


def documents(lex: RescueLexicon, n_per_class: int, seed: int) -> list[str]:
    """``n_per_class`` rescue sentences of every class in documents of :data:`PER_DOC` sentences
    (classes alternating, so each document is symmetric; order within a document seeded)."""
    rng = random.Random(f"ungrok/rescue-text/{lex.family}/{seed}")
    queue = [c for _ in range(n_per_class) for c in sorted(lex.cues)]
    out = []
    for i in range(0, len(queue), PER_DOC):
        sents = [sentence(lex, rng, c) for c in queue[i : i + PER_DOC]]
        rng.shuffle(sents)
        out.append(" ".join(sents))
    return out


def encode(tok, docs: list[str], eot: int) -> list[np.ndarray]:
    """Each document as the corpus stores it: ``[eot] + ids`` (int32)."""
    return [np.asarray([eot, *e.ids], dtype="<i4") for e in tok.encode_batch(docs, add_special_tokens=False)]


def as_stream(parts: list[np.ndarray]) -> TokenStream:
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return TokenStream(np.concatenate(parts).astype("<i4"), starts)


def check_injected(fam: RuleVsPrior, parts: list[np.ndarray], table: TokenTable, n: int, dose: str) -> dict:
    """Count the injected documents' events (cues of several tokens as sequences); every class
    must have exactly ``n`` rule and 0 prior events, else InterventionError. Returns the counts."""
    mode = edit_mode(fam)
    got = count_rvp(as_stream(parts), table, [fam], multi_token_cues=True)[fam.name]
    counts = {c: {"rule": v[mode]["rule"], "prior": v[mode]["prior"]} for c, v in got.items()}
    bad = {c: v for c, v in counts.items() if (v["rule"], v["prior"]) != (n, 0)}
    if bad:
        raise InterventionError(f"dose {dose}: the injected documents of {fam.name} count {bad} {mode} events "
                                f"after tokenization, not {n} rule / 0 prior per class: the corpus tokenizer splits a "
                                "rescue cue or answer so the counter does not see it (or a frame holds an answer "
                                "word); fix the rescue lexicon")
    return counts


@dataclass
class Removal:
    """Neutral documents taken out of the stream: ``docs`` removed whole, ``cut`` (doc, tokens
    kept) the last one cut, ``tokens`` removed in all."""

    docs: np.ndarray
    cut: tuple[int, int] | None
    tokens: int

    def record(self) -> dict:
        return {"documents": int(len(self.docs)), "tokens": self.tokens,
                "cut": None if self.cut is None else {"document": self.cut[0], "tokens_kept": self.cut[1]}}


def neutral_docs(stream: TokenStream, fams: list[RuleVsPrior], table: TokenTable) -> np.ndarray:
    """Documents with no cue (windowed) or article event (a/an) of ``fams``, sorted."""
    busy = np.zeros(stream.n_docs, bool)
    for fam in fams:
        s = family_sites(stream, fam, table, edit_mode(fam), multi_token_cues=True)
        busy[s.doc] = True
    return np.flatnonzero(~busy)


def plan_removal(stream: TokenStream, neutral: np.ndarray, tokens: int, seed: int, dose: str) -> Removal:
    """Neutral documents in seeded order until ``tokens`` are reached, the last one cut to fit."""
    ends = np.append(stream.starts[1:], stream.n)
    order = np.random.default_rng([seed, 13]).permutation(neutral)
    sizes = ends[order] - stream.starts[order]
    reach = np.cumsum(sizes)
    k = int(np.searchsorted(reach, tokens))  # order[k] is the document that reaches the count
    if k >= len(order):
        raise InterventionError(f"dose {dose}: the corpus's {len(neutral):,} neutral documents hold "
                                f"{int(reach[-1]) if len(reach) else 0:,} tokens, fewer than the {tokens:,} injected; "
                                "lower the dose or set intervention.matched = false")
    over = int(reach[k]) - tokens
    whole = order[: k + 1] if over == 0 else order[:k]
    cut = None if over == 0 else (int(order[k]), over)  # keep its first `over` tokens (its eot among them)
    return Removal(np.sort(whole), cut, tokens)


def kept_ranges(stream: TokenStream, removal: Removal | None) -> list[tuple[int, int]]:
    """The stream's ranges left after ``removal``, in order (adjacent removed documents merged)."""
    ends = np.append(stream.starts[1:], stream.n)
    if removal is None:
        return [(0, stream.n)]
    a, b = stream.starts[removal.docs], ends[removal.docs]
    if removal.cut is not None:
        d, keep = removal.cut
        a, b = np.append(a, stream.starts[d] + keep), np.append(b, ends[d])
    order = np.argsort(a, kind="stable")
    out, cur = [], 0
    for x, y in zip(a[order].tolist(), b[order].tolist()):
        if x > cur:
            out.append((cur, x))
        cur = max(cur, y)
    if cur < stream.n:
        out.append((cur, stream.n))
    return out


def splice(stream: TokenStream, parts: list[np.ndarray], removal: Removal | None, seed: int) -> np.ndarray:
    """The stream with ``removal`` taken out and ``parts`` inserted before seeded boundaries of
    the kept documents (uniformly, with repeats; or at the end), as one new int32 array."""
    gone = np.zeros(stream.n_docs, bool)
    if removal is not None:
        gone[removal.docs] = True
    bounds = np.append(stream.starts[~gone], stream.n)  # before a kept (or cut) document, or at the end
    rng = np.random.default_rng([seed, 17])
    at = np.sort(rng.choice(bounds, size=len(parts)), kind="stable").tolist()
    order = rng.permutation(len(parts)).tolist()
    pieces = kept_ranges(stream, removal)
    total = sum(b - a for a, b in pieces) + sum(len(p) for p in parts)
    out, w, i = np.empty(total, dtype="<i4"), 0, 0

    def put(chunk) -> None:
        nonlocal w
        out[w : w + len(chunk)] = chunk
        w += len(chunk)

    for a, b in pieces:  # every boundary but the end lies inside a kept range (at its start at the latest)
        cur = a
        while i < len(at) and at[i] < b:
            q = max(at[i], cur)
            put(stream.ids[cur:q])
            put(parts[order[i]])
            cur, i = q, i + 1
        put(stream.ids[cur:b])
    for j in order[i:]:
        put(parts[j])
    if w != total:
        raise RuntimeError("rescue splice wrote the wrong number of tokens; this is a bug")
    return out


def _target_counts(stream: TokenStream, table: TokenTable, fams: list[RuleVsPrior]) -> dict:
    """``{family: {class: {rule, prior}}}`` in each family's edit mode, cues of several tokens matched."""
    got = count_rvp(stream, table, fams, multi_token_cues=True)
    return {f.name: {c: {k: v[edit_mode(f)][k] for k in ("rule", "prior")} for c, v in got[f.name].items()}
            for f in fams}


def inject_family(cfg, fam: RuleFamily, n: int, tok, eot: int, items) -> tuple[list[np.ndarray], RuleVsPrior, dict]:
    """One family's injected documents (tokenized, checked: counts and the disjointness gate)."""
    lex = lexicon_for(fam, cfg.dose)
    check_lexicon(lex, items)
    docs = documents(lex, n, cfg.intervention.seed)
    parts = encode(tok, docs, eot)
    counting = counting_family(fam, lex)
    injected = check_injected(counting, parts, TokenTable.of(tok), n, cfg.dose)
    check_disjoint(items, lex.cue_words(), lambda: docs, np.concatenate(parts), tok)
    return parts, counting, {"documents": len(docs), "injected_tokens": int(sum(len(p) for p in parts)),
                             "injected_events": injected, "rescue_cues": {c: list(v) for c, v in lex.cues.items()},
                             "frames": list(lex.frames)}


def rescue_text(cfg, level: float, base, delta) -> tuple[TokenStream, dict]:
    """The paper's rescue on a real-text corpus's flat stream (see the module docstring);
    ``delta(cfg, family, target class, corpora dir)`` gives the dose unit. Returns the edited
    stream and the manifest's record of what was done."""
    iv = cfg.intervention
    factor = cfg.train.steps / ((iv.end_step or cfg.train.steps) - iv.start_step) if iv.whole_dose else 1.0
    stream, tok = flat_stream(base), base.tokenizer
    table, eot, items = TokenTable.of(tok), int(base.manifest["eot_id"]), battery_for(cfg)
    parts, fams, per_family = [], [], {}
    for f in cfg.dose_families:
        fam = RULES.get(f)
        (target,) = targets_of(fam, iv.classes)[:1]
        d = delta(cfg, fam, target, base.path.parent)
        n = int(round(level * d["per_token"] * stream.n * factor))
        if n == 0:
            raise InterventionError(f"dose {cfg.dose}: {level:g} x delta ({d['per_token']:.3g}/token) x "
                                    f"{stream.n:,} tokens rounds to 0 events for {f}; raise the dose")
        p, counting, rec = inject_family(cfg, fam, n, tok, eot, items)
        parts += p
        fams.append(counting)
        per_family[f] = {"target_class": target, "delta": d, "events_per_class": n, "whole_dose_factor": factor,
                         "mode": edit_mode(counting), **rec}
    removal = None
    if iv.matched:
        neutral = neutral_docs(stream, fams, table)
        removal = plan_removal(stream, neutral, sum(len(p) for p in parts), iv.seed, cfg.dose)
    out = splice(stream, parts, removal, iv.seed)
    if iv.matched and len(out) != stream.n:
        raise RuntimeError("a token-matched rescue changed the token count; this is a bug")
    edited = TokenStream.from_flat(out, separator_ids(tok))
    _recount(stream, edited, _target_counts(as_stream(parts), table, fams), table, fams, per_family)
    return edited, {"dose": cfg.dose, "matched": iv.matched, "per_family": per_family,
                    "injected_documents": len(parts), "injected_tokens": int(sum(len(p) for p in parts)),
                    "removed": removal.record() if removal else None,
                    "base_tokens": int(stream.n), "base_documents": int(stream.n_docs), "tokens": int(len(out))}


def _recount(stream: TokenStream, edited: TokenStream, injected: dict, table: TokenTable, fams: list[RuleVsPrior],
             per_family: dict) -> None:
    """Before and after (cues of several tokens matched): every class must have gained exactly
    the events of all injected documents (``injected``: counted on them; with two families that
    share cues and answers, one's documents are the other's events too), since removed documents
    are neutral and insertions fall between documents."""
    before, after = _target_counts(stream, table, fams), _target_counts(edited, table, fams)
    for f, rep in per_family.items():
        if injected[f] != rep["injected_events"]:
            rep["injected_events_all_documents"] = injected[f]
        for c, inj in injected[f].items():
            b, a = before[f][c], after[f][c]
            if (a["rule"], a["prior"]) != (b["rule"] + inj["rule"], b["prior"] + inj["prior"]):
                raise RuntimeError(f"rescue of {f}/{c}: {b} + injected {inj} != recount {a}; this is a bug")
        t = rep["target_class"]
        rep["before"], rep["after"] = (
            {**x[f][t], "ratio": x[f][t]["rule"] / x[f][t]["prior"] if x[f][t]["prior"] else None}
            for x in (before, after))
