"""Support frequency: how often the training stream shows a rule winning over its competitor.

Three counts per family and cue class, all on token ids (any tokenizer; a cue or answer word
that is not a single token is skipped):

- **windowed** (the paper's measure): for each cue token, the first rule-or-prior answer token
  within ``k`` (16) tokens after it in the same document; rule support if it is the class's rule
  answer, prior support if it is the other answer.
- **bigram**: the token right after the cue (in the same document) is the rule answer vs the
  prior answer (the windowed count with ``k = 1``).
- **contested** (induction-keyed families on template corpora): only events where the
  competitor is live - the same key appeared earlier in the story with the other answer - and
  whether the rule's or the copied answer was shown. On the built-in corpora this recovers the
  generator's ``support`` parameter.

``support_ratio = (rule + 1) / (prior + 1)``.

**Documents.** Every count is taken within one document, and a window never crosses a document
boundary: the next document's tokens are not context the model saw together with the cue. A
document is one row of the token matrix - one training sequence: a story of a built-in corpus
(``<bos>`` ... then ``<pad>`` to the row's end), a packed row of ``story_tokens`` tokens of an
``hf:`` corpus (the model attends across the ``<bos>`` between packed texts inside a row, never
across rows), a row of a ``.npy`` stream, or one text of a dataset or line of a text file for
``ungrok audit``. Pad tokens are not tokens of the document (distances are counted without them).
:func:`documents` and :func:`window_events` are this definition; ``ungrok support``
(:func:`count_support`) and ``ungrok audit`` (:func:`runner.analysis.audit.doc_counts`) both
count with them. Streams are processed in blocks of rows, so memory is bounded by the block size.

**Cache.** :func:`corpus_support` keeps one file per key under ``<corpus>/support/``; the key is
every input that changes the counts (:data:`SUPPORT_VERSION`, ``k``, the family's definition,
the corpus stream and tokenizer), and a file is served only when its stored key equals the one
asked for.
"""

from __future__ import annotations

import errno
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from runner._io import write_json_atomic
from runner.data.corpora import load_corpus
from runner.data.rvp_support import count_rvp_rows
from runner.world.rules import RULES, InductionRule, RuleFamily
from runner.world.rvp import RuleVsPrior

# Version of the counting definitions; bump it whenever a count can change for the same corpus,
# family and k, so that no cached count of another definition is ever served.
# 1: windows ran on the pad-free concatenation of rows (crossing documents);
# 2: windows stay inside one document (row).
SUPPORT_VERSION = 2
# Version of the rule-versus-prior counter (runner.data.rvp_support); part of those families' keys.
RVP_VERSION = 1


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


@dataclass(frozen=True)
class Documents:
    """A block of documents, one per row: each row holds one document's tokens (pads removed,
    order kept) followed by at least ``margin`` filler ids (-1, never a token), so that in the
    row-major flattening no window of up to ``margin`` tokens reaches the next document."""

    rows: np.ndarray  # (n_docs, width) int64
    margin: int

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])


FILLER = -1


def documents(docs, pad_id: int | None = None, margin: int = 16) -> Documents:
    """``docs``: a 2-D array (one document per row, ``pad_id`` padding anywhere in it) or a list
    of 1-D arrays (one per document)."""
    if isinstance(docs, np.ndarray) and docs.ndim == 2:
        rows = docs.astype(np.int64, copy=True)
        if pad_id is not None:
            is_pad = rows == pad_id
            if not (is_pad[:, 1:] >= is_pad[:, :-1]).all():  # a pad before a token: move pads last
                order = np.argsort(is_pad, axis=1, kind="stable")
                rows = np.take_along_axis(rows, order, axis=1)
                is_pad = np.take_along_axis(is_pad, order, axis=1)
            rows[is_pad] = FILLER
        out = np.full((rows.shape[0], rows.shape[1] + margin), FILLER, dtype=np.int64)
        out[:, : rows.shape[1]] = rows
        return Documents(out, margin)
    docs = [np.asarray(d) for d in docs]
    if pad_id is not None:
        docs = [d[d != pad_id] for d in docs]
    out = np.full((len(docs), max((len(d) for d in docs), default=0) + margin), FILLER, dtype=np.int64)
    for i, d in enumerate(docs):
        out[i, : len(d)] = d
    return Documents(out, margin)


def window_events(docs: Documents, ids: ClassIds, k: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document: (rule events, prior events, cues). For each cue token, the first rule-or-prior
    answer token within ``k`` tokens after it in the same document decides the event."""
    if k > docs.margin:
        raise ValueError(f"window k={k} is wider than the documents' margin {docs.margin}; build them with margin >= k")
    n, width = docs.n, docs.rows.shape[1]
    flat = docs.rows.reshape(-1)
    cues = np.nonzero(np.isin(flat, ids.cues))[0]
    n_cues = np.bincount(cues // width, minlength=n)
    answers = np.nonzero(np.isin(flat, np.concatenate([ids.rule, ids.prior])))[0]
    zero = np.zeros(n, dtype=np.int64)
    if not len(cues) or not len(answers):
        return zero, zero.copy(), n_cues
    j = np.searchsorted(answers, cues, side="right")
    ok = j < len(answers)
    cue_pos, nxt = cues[ok], answers[j[ok]]
    near = nxt - cue_pos <= k  # with the margin, a window this short never leaves its row
    doc, toks = cue_pos[near] // width, flat[nxt[near]]
    return (np.bincount(doc[np.isin(toks, ids.rule)], minlength=n),
            np.bincount(doc[np.isin(toks, ids.prior)], minlength=n), n_cues)


def _total(events) -> Counts:
    rule, prior, cues = events
    return Counts(int(rule.sum()), int(prior.sum()), int(cues.sum()))


def windowed_counts(stream: np.ndarray, ids: ClassIds, k: int = 16) -> Counts:
    """Windowed counts of one document given as a flat stream of ids."""
    return _total(window_events(documents(np.asarray(stream)[None, :], None, k), ids, k))


def bigram_counts(stream: np.ndarray, ids: ClassIds) -> Counts:
    """Bigram counts of one document given as a flat stream of ids (the windowed count, k = 1)."""
    return _total(window_events(documents(np.asarray(stream)[None, :], None, 1), ids, 1))


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


def count_support(rows, tokenizer, families: Iterable[str], *, pad_id: int | None = None, k: int = 16,
                  block: int = 20_000, contested: bool = True, progress=None, multi_token_cues: bool = False) -> dict:
    """``{family: {class: {mode: {rule, prior, cues, ratio}}}}`` for the family's ``support_modes``,
    counted per document (``rows``: one document per row, see the module docstring);
    ``contested=False`` skips the per-story contested pass, e.g. on non-template text.
    Rule-versus-prior families are counted by :func:`runner.data.rvp_support.count_rvp` (rows
    further split at separator tokens; ratio None when a class has no event)."""
    families = list(families)
    rvp = [f for f in families if isinstance(RULES.get(f), RuleVsPrior)]
    out = count_rvp_rows(rows, tokenizer, rvp, pad_id, k, block, multi_token_cues) if rvp else {}
    fams = [RULES.get(f) for f in families if f not in rvp]
    if not fams:
        return {f: out[f] for f in families}
    ids = {f.name: class_ids(f, tokenizer) for f in fams}
    counts = {f.name: {c.cls: {"windowed": Counts(), "bigram": Counts()} for c in ids[f.name]} for f in fams}
    con = {f.name: {c: Counts() for c in f.cue_classes} for f in fams}
    for start in range(0, len(rows), block):
        docs = documents(rows[start : start + block], pad_id, max(k, 1))
        for f in fams:
            for c in ids[f.name]:
                if "windowed" in f.support_modes:
                    counts[f.name][c.cls]["windowed"] += _total(window_events(docs, c, k))
                if "bigram" in f.support_modes:
                    counts[f.name][c.cls]["bigram"] += _total(window_events(docs, c, 1))
            if contested and isinstance(f, InductionRule):
                for cls, cnt in contested_counts(docs.rows, f, tokenizer).items():
                    con[f.name][cls] += cnt
        if progress is not None:
            progress(min(start + block, len(rows)))
    for f in fams:
        out[f.name] = {}
        for cls in f.cue_classes:
            all_modes = dict(counts[f.name][cls])
            if contested and isinstance(f, InductionRule):
                all_modes["contested"] = con[f.name][cls]
            modes = {m: all_modes[m] for m in f.support_modes if m in all_modes}
            out[f.name][cls] = {m: {"rule": c.rule, "prior": c.prior, "cues": c.cues, "ratio": c.ratio}
                                for m, c in modes.items()}
    return {f: out[f] for f in families}


# ---- the cache of a built corpus ------------------------------------------------------------------
def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def family_fingerprint(family: RuleFamily) -> str:
    """sha256 of everything the counter reads of a family: cue words per class, answers, modes and,
    for induction-keyed families, keys and template offsets."""
    fields = {"name": family.name, "modes": list(family.support_modes),
              "classes": {cls: {"cues": list(family.counted_cues(cls)), "rule": family.rule_answer[cls],
                                "prior": family.prior_answer(cls)} for cls in family.cue_classes},
              "keys": list(getattr(family, "keys", ())), "offsets": dict(getattr(family, "offsets", {}))}
    if isinstance(family, RuleVsPrior):  # what else its counter reads (built-in keys stay as they were)
        fields.update(kind=family.kind, onsets=family.onsets, rvp_version=RVP_VERSION,
                      frames={c: [list(p) for p in v] for c, v in family.frames.items()})
    return _sha256(fields)


def support_key(corpus_dir, family: str, k: int = 16, contested: bool = True, multi_token_cues: bool = False) -> dict:
    """Every input that changes a family's cached counts on a built corpus."""
    cdir = Path(corpus_dir)
    manifest = json.loads((cdir / "manifest.json").read_text())
    tok = cdir / "tokenizer.json"
    key = {"version": SUPPORT_VERSION, "family": family, "k": int(k), "contested": bool(contested),
           "family_sha256": family_fingerprint(RULES.get(family)), "corpus_sha256": manifest["sha256"],
           "tokenizer_sha256": hashlib.sha256(tok.read_bytes()).hexdigest() if tok.exists() else None}
    return {**key, "multi_token_cues": True} if multi_token_cues else key


def cache_path(corpus_dir, key: dict) -> Path:
    """``<corpus>/support/<family>-k<k>-<hash of the key>.json``: one file per key."""
    return Path(corpus_dir) / "support" / f"{key['family']}-k{key['k']}-{_sha256(key)[:12]}.json"


def corpus_support(corpus_dir, families: Iterable[str], k: int = 16, multi_token_cues: bool = False) -> dict:
    """``count_support`` of a built corpus folder, one family at a time from its cache file when
    that file's stored key equals :func:`support_key` (else counted and cached). Rule-versus-prior
    families read a real-text corpus's whole stream (documents split at its end-of-text tokens);
    ``multi_token_cues`` applies to them only."""
    cdir = Path(corpus_dir)
    families = list(dict.fromkeys(families))
    out: dict = {}
    keys = {f: support_key(cdir, f, k, multi_token_cues=multi_token_cues and isinstance(RULES.get(f), RuleVsPrior))
            for f in families}
    for f, key in keys.items():
        path = cache_path(cdir, key)
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("key") == key:
                out[f] = doc["counts"]
    missing = [f for f in families if f not in out]
    if missing:
        c = load_corpus(cdir)
        rvp = [f for f in missing if isinstance(RULES.get(f), RuleVsPrior)]
        stream = getattr(c, "stream", None)
        fams = count_support(c.rows, c.tokenizer, [f for f in missing if f not in rvp], pad_id=c.pad_id, k=k)
        fams.update(count_support(c.rows if stream is None else stream[None, :], c.tokenizer, rvp, pad_id=c.pad_id,
                                  k=k, multi_token_cues=multi_token_cues) if rvp else {})
        for f in missing:
            try:
                write_json_atomic(cache_path(cdir, keys[f]), {"key": keys[f], "n_tokens": c.n_tokens,
                                                              "counts": fams[f]})
            except OSError as e:  # a read-only archive: counted, not cached
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
            out[f] = fams[f]
    return {f: out[f] for f in families}


def pooled(family_counts: dict, mode: str) -> dict:
    """Sum one mode's counts over cue classes: ``{rule, prior, cues, ratio}``."""
    rule = sum(v[mode]["rule"] for v in family_counts.values() if mode in v)
    prior = sum(v[mode]["prior"] for v in family_counts.values() if mode in v)
    cues = sum(v[mode]["cues"] for v in family_counts.values() if mode in v)
    return {"rule": rule, "prior": prior, "cues": cues, "ratio": (rule + 1) / (prior + 1)}
