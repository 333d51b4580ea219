"""Whole-word matching of surface forms on a token stream, for any tokenizer, vectorised.

The support counters of the rule-versus-prior families (:mod:`runner.data.rvp_support`) read a
corpus as a plain 1-D array of token ids plus the offsets where documents start
(:class:`TokenStream`), so they do not depend on how a corpus is stored.

**Forms.** A word is looked for in its surface forms: with and without a leading space
(``" she"`` mid-text, ``"she"`` after a quote, a newline or at a document's start), lower-case and
capitalised (``" She"``). Each form is encoded with the corpus's tokenizer: one token, or a
sequence of tokens (``" herself"`` is ``" her" + "self"`` in the paper's web vocabulary).

**Whole words.** A match counts only if it is a whole word (byte-level BPE has no word ids, so
this is read off the tokens' text): it does not start inside a word (its first token begins with
a letter while the token before ends with a letter: ``"s" + "he"`` is the word *she*, not *he*)
and does not end inside one (``" he" + "llo"``). A document's first and last tokens are word
edges. Word-level tokenizers (``tokenizers`` ``WordLevel`` models) have whole words only.
A match never spans two documents.

**Speed.** One gather of the stream through a boolean lookup table over the vocabulary (in
chunks of :data:`CHUNK` tokens) finds every position whose token could end a form of any form
set; everything after that works on those positions only (:class:`Scan`). No per-token Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np
from jaxtyping import Bool, Int

CHUNK = 1 << 24  # tokens per gather (bounds the temporary boolean array)
SEPARATORS = ("<|endoftext|>", "<bos>", "<eos>", "</s>", "<s>")  # special tokens that separate documents


@dataclass(frozen=True)
class TokenStream:
    """A corpus as one array of token ids and the offsets where its documents start.

    ``ids``: (n,) token ids; ``starts``: (d,) increasing offsets, ``starts[0] == 0``; document i
    is ``ids[starts[i]:starts[i + 1]]``. A separator token (end-of-text) stays in the stream, as
    the first token of the document it opens (a built real-text corpus puts one before every
    document); it is never a form, so it is never counted."""

    ids: Int[np.ndarray, " n"]
    starts: Int[np.ndarray, " d"]

    def __post_init__(self) -> None:
        if self.ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {self.ids.shape}")
        if len(self.starts) == 0 or self.starts[0] != 0 or np.any(np.diff(self.starts) < 0):
            raise ValueError("starts must begin with 0 and never decrease")

    @property
    def n(self) -> int:
        return int(len(self.ids))

    @property
    def n_docs(self) -> int:
        return int(len(self.starts))

    def doc_of(self, pos: Int[np.ndarray, " m"]) -> Int[np.ndarray, " m"]:
        """The document index of each position (a binary search: call it on few positions)."""
        return np.searchsorted(self.starts, pos, side="right") - 1

    @cached_property
    def ends(self) -> Int[np.ndarray, " d"]:
        """One past each document's last position."""
        return np.append(self.starts[1:], self.n).astype(np.int64)

    @classmethod
    def from_documents(cls, docs: Sequence[np.ndarray], sep_ids: Iterable[int] = ()) -> "TokenStream":
        """One document per array (e.g. one text per line), each further split at any separator
        token in ``sep_ids``."""
        lens = np.array([len(d) for d in docs], dtype=np.int64)
        ids = np.concatenate([np.asarray(d) for d in docs]) if len(docs) else np.zeros(0, np.int32)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(docs) else np.zeros(1, np.int64)
        return cls(ids, starts.astype(np.int64)).split_at(sep_ids)

    @classmethod
    def from_rows(cls, rows: np.ndarray, pad_id: int | None = None, sep_ids: Iterable[int] = ()) -> "TokenStream":
        """Rows of a token matrix, each row a document (its ``pad_id`` tokens dropped), each
        further split at any separator token in ``sep_ids``."""
        rows = np.asarray(rows)
        if rows.ndim == 1:
            rows = rows[None, :]
        keep = np.ones(rows.shape, bool) if pad_id is None else rows != pad_id
        ids = rows[keep]
        lens = keep.sum(1)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        return cls(ids, starts).split_at(sep_ids)

    @classmethod
    def from_flat(cls, ids: np.ndarray, sep_ids: Iterable[int] = ()) -> "TokenStream":
        """A flat stream whose documents are separated by end-of-text tokens (``sep_ids``)."""
        return cls(np.asarray(ids), np.zeros(1, np.int64)).split_at(sep_ids)

    def split_at(self, sep_ids: Iterable[int]) -> "TokenStream":
        """The same stream with a document starting at every separator token."""
        sep = np.array(sorted(set(int(s) for s in sep_ids)), dtype=np.int64)
        if not len(sep) or not self.n:
            return self
        starts = np.union1d(self.starts, np.flatnonzero(np.isin(self.ids, sep)))
        return TokenStream(self.ids, starts.astype(np.int64))


def separator_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's document separators (:data:`SEPARATORS` that it has)."""
    out = [tokenizer.token_to_id(s) for s in SEPARATORS]
    return sorted(i for i in out if i is not None)


@dataclass
class TokenTable:
    """What the matcher needs to know about every token of a tokenizer: its text (decoded
    alone), whether that text starts / ends with a letter, whether it starts a word."""

    tokenizer: object
    text: list[str]
    starts_alpha: Bool[np.ndarray, " v"]
    ends_alpha: Bool[np.ndarray, " v"]
    word_level: bool
    unk_id: int | None
    _enc: dict = field(default_factory=dict, repr=False)  # memo: encoded forms, onset masks

    @classmethod
    def of(cls, tokenizer) -> "TokenTable":
        size = tokenizer.get_vocab_size()
        text = [tokenizer.decode([i], skip_special_tokens=False) for i in range(size)]
        word_level = type(tokenizer.model).__name__ == "WordLevel"
        unk = getattr(tokenizer.model, "unk_token", None)
        starts, ends = np.array([t[:1].isalpha() for t in text]), np.array([t[-1:].isalpha() for t in text])
        return cls(tokenizer, text, starts, ends, word_level, tokenizer.token_to_id(unk) if unk else None)

    @property
    def size(self) -> int:
        return len(self.text)

    def encode(self, form: str) -> tuple[int, ...] | None:
        """The token ids of one surface form; None if it holds the unknown token."""
        if form not in self._enc:
            ids = tuple(self.tokenizer.encode(form, add_special_tokens=False).ids)  # type: ignore[attr-defined]
            self._enc[form] = None if (not ids or (self.unk_id is not None and self.unk_id in ids)) else ids
        return self._enc[form]

    def onset(self, letters: str) -> Bool[np.ndarray, " v"]:
        """Tokens that begin a word with one of ``letters`` (case-insensitive): for byte-level
        BPE a space then the letter (the paper's test), for word-level any word."""
        letters = letters.lower()
        if ("onset", letters) not in self._enc:
            if self.word_level:
                out = [t[:1].lower() in letters and t[:1].isalpha() for t in self.text]
            else:
                out = [len(t) >= 2 and t[0] == " " and t[1].isalpha() and t[1].lower() in letters for t in self.text]
            self._enc[("onset", letters)] = np.array(out)
        return self._enc[("onset", letters)]


def surface_forms(word: str, cased: bool = True) -> tuple[str, ...]:
    """``word`` with and without a leading space, and capitalised (``cased``), without repeats."""
    bases = [word, word[:1].upper() + word[1:]] if cased else [word]
    out: list[str] = []
    for b in bases:
        for f in (" " + b, b):
            if f not in out:
                out.append(f)
    return tuple(out)


@dataclass(frozen=True)
class FormSet:
    """Token sequences to find, each with an integer label (several may share one)."""

    seqs: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]

    def anchors(self) -> np.ndarray:
        """The tokens a scan looks for: each sequence's last (a frame's answer, a name's last
        piece: rarer than a frame's first word, so the scan finds fewer positions)."""
        return np.array(sorted({s[-1] for s in self.seqs}), dtype=np.int64)


def form_set(table: TokenTable, forms: Sequence[tuple[str, int]], single_only: bool = False) -> FormSet:
    """Encode ``(form, label)`` pairs; forms that hold the unknown token are left out, and so
    are multi-token forms when ``single_only``. A sequence listed twice is kept once (the
    first label wins)."""
    seqs: dict[tuple[int, ...], int] = {}
    for form, label in forms:
        ids = table.encode(form)
        if ids is None or (single_only and len(ids) > 1):
            continue
        seqs.setdefault(ids, label)
    return FormSet(tuple(seqs), tuple(seqs.values()))


@dataclass(frozen=True)
class Matches:
    """Whole-word matches: first and last token position, the sequence's label and the document,
    sorted by start."""

    start: Int[np.ndarray, " m"]
    end: Int[np.ndarray, " m"]
    label: Int[np.ndarray, " m"]
    doc: Int[np.ndarray, " m"]

    def __len__(self) -> int:
        return int(len(self.start))

    def take(self, keep: np.ndarray) -> "Matches":
        return Matches(self.start[keep], self.end[keep], self.label[keep], self.doc[keep])


class Scan:
    """A stream scanned once for a group of form sets, then matched against any of them.

    The scan is one pass over the stream: the positions whose token ends some sequence of
    ``sets`` (``pos``, sorted), their tokens and documents. :meth:`match` works on those alone and
    remembers its answer per form set (families that share forms share the work)."""

    def __init__(self, stream: TokenStream, table: TokenTable, sets: Iterable[FormSet]) -> None:
        self.stream, self.table = stream, table
        self.size = max(table.size, int(stream.ids.max(initial=0)) + 1)
        mask = np.zeros(self.size, dtype=bool)
        for fs in sets:
            if fs.seqs:
                mask[fs.anchors()] = True
        parts = [np.flatnonzero(mask[stream.ids[i : i + CHUNK]]) + i for i in range(0, stream.n, CHUNK)]
        self.pos: Int[np.ndarray, " h"] = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        self.tok: Int[np.ndarray, " h"] = stream.ids[self.pos].astype(np.int64)
        self.doc: Int[np.ndarray, " h"] = stream.doc_of(self.pos)
        self._memo: dict = {}

    def match(self, forms: FormSet, whole_word: bool = True) -> Matches:
        """Every occurrence of the sequences of ``forms`` (which must be among the scanned sets)
        inside one document; whole words unless ``whole_word`` is False."""
        key = (forms.seqs, forms.labels, whole_word)
        if key not in self._memo:
            m = self._singles(forms)
            multi = self._multis(forms)
            if len(multi):
                m = _concat([m, multi])
                m = m.take(np.argsort(m.start, kind="stable"))
            if whole_word:
                m = m.take(self._whole_words(m))
            self._memo[key] = m
        return self._memo[key]

    def _singles(self, forms: FormSet) -> Matches:
        lut = np.full(self.size, -1, dtype=np.int64)
        for seq, label in zip(forms.seqs, forms.labels):
            if len(seq) == 1 and lut[seq[0]] < 0:
                lut[seq[0]] = label
        lab = lut[self.tok]
        sel = np.flatnonzero(lab >= 0)
        start = self.pos[sel]
        return Matches(start, start, lab[sel], self.doc[sel])

    def _multis(self, forms: FormSet) -> Matches:
        """Sequences of 2+ tokens, one length at a time: found by their last token, then the first
        tokens (up to 3) of each candidate packed into one integer and looked up among the
        sequences' keys; tokens past the third are compared one by one on the few candidates left."""
        by_len: dict[int, list[tuple[tuple[int, ...], int]]] = {}
        for seq, label in zip(forms.seqs, forms.labels):
            if len(seq) > 1:
                by_len.setdefault(len(seq), []).append((seq, label))
        return _concat([self._of_length(n, group) for n, group in sorted(by_len.items())])

    def _of_length(self, n: int, group: list[tuple[tuple[int, ...], int]]) -> Matches:
        ids, base, w = self.stream.ids, self.size, min(n, 3)
        lut = np.zeros(self.size, dtype=bool)
        lut[[s[-1] for s, _ in group]] = True
        sel = np.flatnonzero(lut[self.tok])
        sel = sel[self.pos[sel] - (n - 1) >= self.stream.starts[self.doc[sel]]]  # the whole sequence in the document
        p = self.pos[sel] - (n - 1)
        key = np.zeros(len(p), dtype=np.int64)
        for j in range(w):
            key = key * base + ids[p + j]
        keys = np.array([sum(t * base ** (w - 1 - j) for j, t in enumerate(s[:w])) for s, _ in group], np.int64)
        if n > 3:  # rare (long multi-token cues): compare the tail one sequence at a time
            parts = []
            for (seq, label), k in zip(group, keys):
                at = np.flatnonzero(key == k)
                for j in range(w, n):
                    at = at[ids[p[at] + j] == seq[j]]
                parts.append(Matches(p[at], p[at] + n - 1, np.full(len(at), label, np.int64), self.doc[sel[at]]))
            return _concat(parts)
        order = np.argsort(keys)
        at = np.minimum(np.searchsorted(keys[order], key), len(keys) - 1)
        hit = keys[order][at] == key
        sel, p, which = sel[hit], p[hit], order[at[hit]]
        labels = np.array([lab for _, lab in group], dtype=np.int64)
        return Matches(p, p + n - 1, labels[which], self.doc[sel])

    def _whole_words(self, m: Matches) -> np.ndarray:
        """True where a match is a whole word (see the module docstring)."""
        t, ids, s = self.table, self.stream.ids, self.stream
        if t.word_level or not len(m):
            return np.ones(len(m), bool)
        keep = np.ones(len(m), bool)
        left = np.flatnonzero(t.starts_alpha[ids[m.start]] & (m.start > s.starts[m.doc]))
        keep[left] &= ~t.ends_alpha[ids[m.start[left] - 1]]
        right = np.flatnonzero(t.ends_alpha[ids[m.end]] & (m.end + 1 < s.ends[m.doc]))
        keep[right] &= ~t.starts_alpha[ids[m.end[right] + 1]]
        return keep


def _concat(parts: list[Matches]) -> Matches:
    if not parts:
        z = np.zeros(0, np.int64)
        return Matches(z, z, z, z)
    return Matches(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("start", "end", "label", "doc")))
