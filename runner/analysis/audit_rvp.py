"""Audit and support counts of the rule-versus-prior families on real corpora, per cue class.

The same readers as :func:`runner.analysis.audit.audit_corpus` (a built corpus folder, a Hugging
Face dataset on disk, plain text: one document per line, a ``.npy`` token stream), the same
streaming in blocks of documents, and the counters of :mod:`runner.data.rvp_support` (windowed,
frame bigram, a/an), on the corpus's own tokens: raw text needs the tokenizer the corpus is (or
will be) trained with (``tokenizer``), because what is one token, and what 16 tokens span,
depend on it. Documents are further split at separator tokens (end-of-text).

Every count is per cue class, with a 95% percentile bootstrap CI over documents (as the
built-in audit: 1,000 resamples, contiguous blocks past 20,000 documents); pooled over classes
only when asked. A class with no event has ratio and CI None, and :func:`silent` lists the
families and modes that found nothing at all, so a caller can refuse to report them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runner.analysis.audit import AuditError, AuditResult, bootstrap_ratio, read_documents
from runner.data.corpora import TEXT_FORMAT, load_corpus
from runner.data.matching import Scan, TokenStream, TokenTable, separator_ids
from runner.data.rvp_support import (
    POOLED,
    compile_family,
    cue_report,
    doc_class_counts,
    empty_modes,
    entry,
    pooled_counts,
    rvp_family,
    sites_of,
)
from runner.data.support import corpus_support
from runner.world.rules import RULES
from runner.world.rvp import RuleVsPrior


def _reader(path: str | Path, families: list[str], text_column: str, tokenizer: str | None, block: int):
    for f in families:
        try:
            rvp_family(f)
        except (KeyError, ValueError) as e:
            raise AuditError(str(e).strip("'\"")) from None
    path = Path(path)
    is_text = path.exists() and not (path / "manifest.json").exists() and path.suffix != ".npy" \
        and not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists()
    if is_text and not tokenizer:
        raise AuditError(f"{path}: rule-versus-prior families are counted on the corpus's own tokens; pass "
                         "--tokenizer TOKENIZER.json (the tokenizer the corpus is trained with, e.g. the paper's "
                         "web-bpe8192.json)")
    manifest = path / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("format") == TEXT_FORMAT:
        corpus = load_corpus(path)  # a real-text corpus: its whole stream, not its rows
        return corpus.tokenizer, corpus.pad_id, _stream_documents(corpus, block), None
    return read_documents(path, text_column=text_column, tokenizer_path=tokenizer, block=block)


def _stream_documents(corpus, block: int):
    """Blocks of ``block`` documents of a real-text corpus's stream, cut before each separator."""
    stream = corpus.stream
    cuts = np.flatnonzero(np.isin(stream, separator_ids(corpus.tokenizer)))
    edges = np.unique(np.concatenate([[0], cuts, [len(stream)]]))
    for i in range(0, len(edges) - 1, block):
        e = edges[i : i + block + 1]
        yield [np.asarray(stream[a:b]) for a, b in zip(e[:-1], e[1:])]


@dataclass
class _Acc:
    """Per (family, mode, class): rule and prior events per document, blocks appended; cues summed."""

    parts: dict = field(default_factory=dict)
    cues: dict = field(default_factory=dict)

    def add(self, key: tuple, rule: np.ndarray, prior: np.ndarray, cues: int) -> None:
        self.parts.setdefault(key, ([], []))
        self.parts[key][0].append(rule)
        self.parts[key][1].append(prior)
        self.cues[key] = self.cues.get(key, 0) + cues

    def result(self, key: tuple, n_boot: int) -> dict:
        r, p = (np.concatenate(x) for x in self.parts[key])
        e = entry(int(r.sum()), int(p.sum()), self.cues[key])
        return {**e, "ci": bootstrap_ratio(r, p, n_boot) if e["ratio"] is not None and n_boot > 0 else None}


def audit_rvp(path: str | Path, families: list[str], *, text_column: str = "text", tokenizer: str | None = None,
              k: int = 16, block: int = 4096, multi_token_cues: bool = False, pool: bool = False,
              progress=None, n_boot: int = 1000) -> AuditResult:
    """Count the families' support per document and class over the whole corpus, streaming.
    ``families[f][mode]``: ``{"classes": {class: {rule, prior, cues, ratio, ci}}}``, plus
    ``"pooled"`` (same fields) when ``pool``; ``n_boot=0``: no CI."""
    return _audit(path, families, text_column, tokenizer, k, block, multi_token_cues, pool, progress, n_boot)[0]


def _audit(path, families, text_column, tokenizer, k, block, multi_token_cues, pool, progress, n_boot):
    t0 = time.time()
    tok, pad, blocks, n_total = _reader(path, families, text_column, tokenizer, block)
    table, seps = TokenTable.of(tok), separator_ids(tok)
    comp = [compile_family(rvp_family(f), table, multi_token_cues) for f in families]
    acc, pooled_acc = _Acc(), _Acc()
    n_docs = n_tokens = 0
    for docs in blocks:
        stream = TokenStream.from_documents(docs, seps)
        sc = Scan(stream, table, [s for c in comp for s in c.sets()])
        for c in comp:
            for m in c.family.support_modes:
                s = sites_of(sc, c, m, k)
                per_doc = doc_class_counts(stream, s)
                for ci, (cls, (r, p)) in enumerate(per_doc.items()):
                    acc.add((c.family.name, m, cls), r, p, int((s.cls == ci).sum()))
                if pool:
                    r_all, p_all = (np.sum([v[i] for v in per_doc.values()], axis=0) for i in (0, 1))
                    pooled_acc.add((c.family.name, m), r_all, p_all, len(s))
        n_docs, n_tokens = n_docs + len(docs), n_tokens + int(sum(len(d) for d in docs))
        if progress:
            progress(n_docs, n_total)
    if n_docs == 0:
        raise AuditError(f"{path}: no documents found")
    out: dict = {}
    for c in comp:
        f = c.family.name
        out[f] = {m: {"classes": {cls: acc.result((f, m, cls), n_boot) for cls in c.classes}}
                  for m in c.family.support_modes}
        if pool:
            for m in out[f]:
                out[f][m][POOLED] = pooled_acc.result((f, m), n_boot)
    return AuditResult(str(path), n_docs, n_tokens, time.time() - t0, out), table


def silent(families: dict) -> list[tuple[str, str]]:
    """(family, mode) of an :func:`audit_rvp` result with no event in any class."""
    return [(f, m) for f, modes in families.items() for m, v in modes.items()
            if all(c["rule"] + c["prior"] == 0 for c in v["classes"].values())]


def _by_class(modes: dict) -> dict:
    """``{mode: {"classes": {class: v}}}`` -> ``{class: {mode: v}}``."""
    classes = next(iter(modes.values()))["classes"]
    return {cls: {m: modes[m]["classes"][cls] for m in modes} for cls in classes}


def support_counts(path: str | Path, families: list[str], *, k: int = 16, tokenizer: str | None = None,
                   text_column: str = "text", multi_token_cues: bool = False, pool: bool = False) -> dict:
    """What ``ungrok support`` reports: ``{"counts": {family: {class: {mode: {rule, prior, cues,
    ratio}}}}, "cues": which cue words the windowed count sees, "n_tokens", "silent": (family,
    mode) pairs with no event at all}``. A built corpus folder is counted through the cache of
    :func:`runner.data.support.corpus_support` (every family); other inputs (rule-versus-prior
    families only) through :func:`audit_rvp` without a CI. A ratio of 0/0 is None, never 1;
    ``pool`` adds ``"pooled"`` beside the classes."""
    from tokenizers import Tokenizer

    path = Path(path)
    rvp = [f for f in families if isinstance(RULES.get(f), RuleVsPrior)]
    if (path / "manifest.json").exists():
        counts = corpus_support(path, families, k=k, multi_token_cues=multi_token_cues)
        table = TokenTable.of(Tokenizer.from_file(str(path / "tokenizer.json")))
        n_tokens = int(json.loads((path / "manifest.json").read_text())["n_tokens"])
    else:
        builtin = [f for f in families if f not in rvp]
        if builtin:
            raise AuditError(f"{', '.join(builtin)}: the built-in world's families are counted on built corpora "
                             "(ungrok corpus build); give a corpus folder, or use ungrok audit for raw text")
        res, table = _audit(path, rvp, text_column, tokenizer, k, 4096, multi_token_cues, False, None, 0)
        counts = {f: _by_class(modes) for f, modes in res.families.items()}
        n_tokens = res.n_tokens
    counts = {f: {cls: {m: entry(v["rule"], v["prior"], v["cues"]) for m, v in modes.items()}
                  for cls, modes in classes.items()} for f, classes in counts.items()}
    for classes in counts.values() if pool else ():
        modes = next(iter(classes.values()))
        classes[POOLED] = {m: pooled_counts({c: v[m] for c, v in classes.items()}) for m in modes}
    return {"counts": counts, "cues": cue_report(rvp, table, multi_token_cues), "n_tokens": n_tokens,
            "silent": empty_modes(counts)}
