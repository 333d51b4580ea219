"""Support frequency: how often the training stream shows a rule winning over its competitor.

Three counts per family and cue class, all on token ids (any tokenizer; a cue or answer word
that is not a single token is skipped):

- **windowed** (the paper's measure): for each cue token, the first rule-or-prior answer token
  within ``k`` (16) tokens after it; rule support if it is the class's rule answer, prior
  support if it is the other answer.
- **bigram**: the token right after the cue is the rule answer vs the prior answer.
- **contested** (induction-keyed families on template corpora): only events where the
  competitor is live - the same key appeared earlier in the story with the other answer - and
  whether the rule's or the copied answer was shown. On the built-in corpora this recovers the
  generator's ``support`` parameter.

``support_ratio = (rule + 1) / (prior + 1)``. Streams are processed in row blocks with a
``k``-token look-ahead, so memory is bounded by the block size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from runner._io import write_json_atomic
from runner.data.corpora import load_corpus
from runner.world.rules import RULES, InductionRule, RuleFamily


@dataclass
class Counts:
    rule: int = 0
    prior: int = 0
    cues: int = 0

    @property
    def ratio(self) -> float:
        return (self.rule + 1) / (self.prior + 1)

    def __iadd__(self, other: "Counts") -> "Counts":
        self.rule += other.rule
        self.prior += other.prior
        self.cues += other.cues
        return self


def token_ids(tokenizer, word: str) -> list[int]:
    """Single-token ids of ``word`` as a bare word and with a leading space (BPE tokenizers)."""
    out: set[int] = set()
    for form in (word, " " + word):
        enc = tokenizer.encode(form, add_special_tokens=False)
        ids = list(getattr(enc, "ids", enc))
        if len(ids) == 1:
            out.add(ids[0])
    unk = tokenizer.token_to_id("<unk>") if hasattr(tokenizer, "token_to_id") else None
    out.discard(unk)
    return sorted(out)


@dataclass
class ClassIds:
    cls: str
    cues: np.ndarray
    rule: np.ndarray
    prior: np.ndarray


def class_ids(family: RuleFamily, tokenizer) -> list[ClassIds]:
    out = []
    for cls in family.cue_classes:
        cue_ids = sorted({i for w in family.counted_cues(cls) for i in token_ids(tokenizer, w)})
        out.append(ClassIds(cls, np.array(cue_ids, dtype=np.int64),
                            np.array(token_ids(tokenizer, family.rule_answer[cls]), dtype=np.int64),
                            np.array(token_ids(tokenizer, family.prior_answer(cls)), dtype=np.int64)))
    return out


def windowed_counts(stream: np.ndarray, ids: ClassIds, k: int = 16, n_cue_positions: int | None = None) -> Counts:
    """Counts on a flat stream; only cues in the first ``n_cue_positions`` positions are counted
    (the rest is look-ahead)."""
    n = len(stream) if n_cue_positions is None else n_cue_positions
    answers = np.nonzero(np.isin(stream, np.concatenate([ids.rule, ids.prior])))[0]
    cues = np.nonzero(np.isin(stream[:n], ids.cues))[0]
    if len(cues) == 0:
        return Counts()
    j = np.searchsorted(answers, cues, side="right")
    ok = j < len(answers)
    nxt = answers[j[ok]]
    nxt = nxt[nxt - cues[ok] <= k]
    toks = stream[nxt]
    return Counts(int(np.isin(toks, ids.rule).sum()), int(np.isin(toks, ids.prior).sum()), int(len(cues)))


def bigram_counts(stream: np.ndarray, ids: ClassIds, n_cue_positions: int | None = None) -> Counts:
    n = len(stream) if n_cue_positions is None else n_cue_positions
    cues = np.nonzero(np.isin(stream[:n], ids.cues))[0]
    cues = cues[cues + 1 < len(stream)]
    nxt = stream[cues + 1]
    return Counts(int(np.isin(nxt, ids.rule).sum()), int(np.isin(nxt, ids.prior).sum()), int(len(cues)))


@dataclass(frozen=True)
class TemplateIds:
    """The token ids an induction family's template events are read with."""

    family: InductionRule
    cue_cls: dict[int, str]
    keys: frozenset[int]
    answer: dict[int, str]
    answer_id: dict[str, int]

    @property
    def cue_array(self) -> np.ndarray:
        return np.array(sorted(self.cue_cls), dtype=np.int64)


def template_ids(family: InductionRule, tokenizer) -> TemplateIds:
    """Single-token ids of the family's cues (probe and rescue cues), keys and answers."""
    def one(w: str) -> int:
        return (token_ids(tokenizer, w) or [-1])[0]

    cue_cls = {one(c): cls for cls in family.cue_classes for c in family.counted_cues(cls)}
    cue_cls.pop(-1, None)
    return TemplateIds(family, cue_cls, frozenset(one(k) for k in family.keys) - {-1},
                       {one(a): a for a in family.answers if one(a) >= 0}, {a: one(a) for a in family.answers})


def scan_contested(row: list[int], t: TemplateIds, cue_positions, edit=None) -> Iterator[tuple[str, bool]]:
    """Walk one story's template events left to right, remembering the answer last shown after
    each key; yield ``(cue class, rule won)`` for every *contested* event (the same key was
    followed earlier in the story by the other class's answer, so the competitor - copy that
    answer - is live and disagrees with the rule).

    ``edit(cls)``, if given, is asked at every contested event the rule won; when it returns True
    the answer token in ``row`` becomes the copied answer (in place: one token replaced by one
    token) and the walk continues on the edited story, so later events see the edited history.
    """
    off = t.family.offsets
    span = max(off.values())
    last: dict[int, str] = {}
    for p in cue_positions:
        if p >= len(row) - span:
            break
        cls = t.cue_cls[row[p]]
        start = p - off["cue"]
        if start < 0:
            continue
        key, a_pos = row[start + off["key"]], start + off["answer"]
        a = row[a_pos]
        if key not in t.keys or a not in t.answer:
            continue
        shown, prev, rule = t.answer[a], last.get(key), t.family.rule_answer[cls]
        if prev is not None and prev != rule:
            if shown == rule and edit is not None and edit(cls):
                row[a_pos] = t.answer_id[prev]
                shown = prev
            yield cls, shown == rule
        last[key] = shown


def cue_positions_by_row(rows: np.ndarray, t: TemplateIds) -> list[list[int]]:
    """Positions of cue tokens in each row (vectorised; the walk then visits only these)."""
    r, c = np.nonzero(np.isin(rows, t.cue_array))
    out: list[list[int]] = [[] for _ in range(len(rows))]
    for ri, ci in zip(r.tolist(), c.tolist()):
        out[ri].append(ci)
    return out


def contested_counts(rows: np.ndarray, family: InductionRule, tokenizer) -> dict[str, Counts]:
    """Per-story count of contested events for an induction-keyed family (template offsets)."""
    t = template_ids(family, tokenizer)
    out = {cls: Counts() for cls in family.cue_classes}
    for row, pos in zip(rows.tolist(), cue_positions_by_row(rows, t)):
        for cls, won in scan_contested(row, t, pos):
            c = out[cls]
            c.cues += 1
            if won:
                c.rule += 1
            else:
                c.prior += 1
    return out


def _blocks(rows: np.ndarray, pad_id: int | None, block: int, k: int) -> Iterator[tuple[np.ndarray, int]]:
    """Flat (pad-free) blocks of ``block`` rows, each with ``k`` tokens of look-ahead appended."""
    def flat(r):
        f = r.reshape(-1)
        return f if pad_id is None else f[f != pad_id]

    for i in range(0, len(rows), block):
        cur = flat(rows[i : i + block])
        ahead = flat(rows[i + block : i + block + 1])[:k] if i + block < len(rows) else np.empty(0, rows.dtype)
        yield np.concatenate([cur, ahead]), len(cur)


def count_support(rows: np.ndarray, tokenizer, families: Iterable[str], *, pad_id: int | None = None,
                  k: int = 16, block: int = 20_000, contested: bool = True, progress=None) -> dict:
    """``{family: {class: {mode: {rule, prior, cues, ratio}}}}`` for the family's ``support_modes``
    (``contested=False`` skips the per-story contested pass, e.g. on non-template text)."""
    fams = [RULES.get(f) for f in families]
    ids = {f.name: class_ids(f, tokenizer) for f in fams}
    win = {f.name: {c.cls: Counts() for c in ids[f.name]} for f in fams}
    big = {f.name: {c.cls: Counts() for c in ids[f.name]} for f in fams}
    con = {f.name: {c: Counts() for c in f.cue_classes} for f in fams}
    for bi, (stream, n) in enumerate(_blocks(rows, pad_id, block, k)):
        for f in fams:
            for c in ids[f.name]:
                win[f.name][c.cls] += windowed_counts(stream, c, k, n)
                big[f.name][c.cls] += bigram_counts(stream, c, n)
            if contested and isinstance(f, InductionRule):
                for cls, cnt in contested_counts(rows[bi * block : (bi + 1) * block], f, tokenizer).items():
                    con[f.name][cls] += cnt
        if progress is not None:
            progress(min((bi + 1) * block, len(rows)))
    out: dict = {}
    for f in fams:
        out[f.name] = {}
        for cls in f.cue_classes:
            all_modes = {"windowed": win[f.name][cls], "bigram": big[f.name][cls]}
            if contested and isinstance(f, InductionRule):
                all_modes["contested"] = con[f.name][cls]
            modes = {m: all_modes[m] for m in f.support_modes if m in all_modes}
            out[f.name][cls] = {m: {"rule": c.rule, "prior": c.prior, "cues": c.cues, "ratio": c.ratio}
                                for m, c in modes.items()}
    return out


def corpus_support(corpus_dir, families: Iterable[str]) -> dict:
    """``count_support`` of a built corpus folder, cached in ``<corpus>/support.json`` (reused
    when it covers the families asked for)."""
    import json
    from pathlib import Path


    cdir = Path(corpus_dir)
    families = list(families)
    cache = cdir / "support.json"
    cached = json.loads(cache.read_text())["families"] if cache.exists() else {}
    if all(f in cached for f in families):
        return {f: cached[f] for f in families}
    c = load_corpus(cdir)
    fams = count_support(c.rows, c.tokenizer, sorted(set(families) | set(cached)), pad_id=c.pad_id)
    write_json_atomic(cache, {"corpus": str(cdir), "k": 16, "n_tokens": c.n_tokens, "families": fams})
    return {f: fams[f] for f in families}


def pooled(family_counts: dict, mode: str) -> dict:
    """Sum one mode's counts over cue classes: ``{rule, prior, cues, ratio}``."""
    rule = sum(v[mode]["rule"] for v in family_counts.values() if mode in v)
    prior = sum(v[mode]["prior"] for v in family_counts.values() if mode in v)
    cues = sum(v[mode]["cues"] for v in family_counts.values() if mode in v)
    return {"rule": rule, "prior": prior, "cues": cues, "ratio": (rule + 1) / (prior + 1)}
