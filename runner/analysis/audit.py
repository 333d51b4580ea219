"""Audit a corpus for ungrokking risk: each rule's support ratio with a bootstrap CI, and, given a
calibration sweep, the critical support ratio f* and a call: at risk / safe / undetermined.

Counting (``audit_corpus``). Documents are read as token ids, streamed in blocks (memory is
bounded by the block, plus two small counters per document), and counted per document with the
support counter's definitions: *windowed* (first rule-or-prior answer within k tokens after each
cue; a window never crosses a document boundary) and, for induction-keyed families, *contested*
(events where the competitor is live). Readers: a built ungrok corpus folder, a Hugging Face
dataset saved on disk (``--text-column``), plain text (a file or a folder of ``*.txt``; each
non-empty line is a document), or a token stream (``.npy`` of ids, one row per document, with its
``tokenizer.json``). Text is tokenized word-level with the built-in world vocabulary (case folded
for answers), which is all the counter needs: cue and answer words.

CI: percentile bootstrap of the pooled ratio (rule + 1) / (prior + 1), resampling documents (in
1,000 contiguous blocks of documents when there are more than 20,000 documents), 1,000 resamples.

Calibration (``fit_critical_ratio``). From finished runs that varied support: x = log support
ratio of the stream each run saw, y = 1 for RECOVERED, 0 for DISPLACED; an UNSTABLE or
PARTIAL run counts by its final against the midpoint of the two thresholds (the survival
line: 0.7 with the paper's constants), since short noisy final windows make UNSTABLE common; NEVER
is left out. Runs are labelled as the verdict labels them: under a locked prereg's constants (with
the amendments in force for each run's data) when one is given, else the paper's; quarantined
seeds stay sealed. ``calibrate`` does all of it and returns a :class:`Calibration`.
If the two classes separate, f* is the geometric midpoint of the gap and its interval the gap
itself; otherwise a logistic fit p = sigmoid(a + b x) gives f* = exp(-a / b) with a bootstrap
interval over runs. A corpus is *at risk* when its ratio's CI lies below f*'s interval, *safe*
when above, *undetermined* otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from runner.analysis.prereg import Locked, unregistered
from runner.analysis.verdicts import find_runs, run_verdict, support_ratio
from runner.data.corpora import load_corpus, world_tokenizer
from runner.data.support import (
    class_ids,
    cue_positions_by_row,
    documents,
    scan_contested,
    template_ids,
    window_events,
)
from runner.trajectory import DISPLACED, INCOMPLETE, NEVER, RECOVERED, Classifier
from runner.world import vocab as V
from runner.world.rules import RULES, InductionRule
from runner.world.rvp import RuleVsPrior


class AuditError(ValueError):
    """The corpus or calibration cannot be audited; the message names the input and the fix."""


# ---- readers --------------------------------------------------------------------------------------
def audit_tokenizer():
    """Word-level tokenizer over the world vocabulary for raw text: punctuation split off, the
    answer words case-folded ("She" counts as "she"); every other word is <unk>."""
    from tokenizers import Regex, normalizers, pre_tokenizers


    tok = world_tokenizer()
    answers = sorted({a for name in RULES for a in RULES.get(name).answers})
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(rf"\b{a.capitalize()}\b"), a) for a in answers])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _text_blocks(texts: Iterator[str], tok, block: int) -> Iterator[list[np.ndarray]]:
    buf: list[str] = []
    for t in texts:
        if t and t.strip():
            buf.append(t)
        if len(buf) == block:
            yield [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(buf)]
            buf = []
    if buf:
        yield [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(buf)]


def read_documents(path: str | Path, *, text_column: str = "text", tokenizer_path: str | None = None,
                   block: int = 4096):
    """``(tokenizer, pad_id, iterator of blocks of documents (lists of id arrays), n_docs or None)``."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.exists():
        raise AuditError(f"corpus {str(path)!r} does not exist")
    if (path / "manifest.json").exists():  # a built ungrok corpus

        c = load_corpus(path)
        pad = c.pad_id

        def rows():
            for i in range(0, len(c.rows), block):
                yield [r[r != pad] for r in c.rows[i : i + block]]

        return c.tokenizer, pad, rows(), len(c.rows)
    if path.suffix == ".npy":
        if not tokenizer_path:
            raise AuditError(f"{path}: a token stream needs its tokenizer; pass --tokenizer tokenizer.json")
        tok = Tokenizer.from_file(str(tokenizer_path))
        arr = np.load(path, mmap_mode="r")
        arr = arr[None, :] if arr.ndim == 1 else arr
        pad = tok.token_to_id(V.PAD)

        def npy():
            for i in range(0, len(arr), block):
                rows = [np.asarray(r) for r in arr[i : i + block]]
                yield rows if pad is None else [r[r != pad] for r in rows]

        return tok, -1 if pad is None else pad, npy(), len(arr)
    tok = Tokenizer.from_file(str(tokenizer_path)) if tokenizer_path else audit_tokenizer()
    pad = tok.token_to_id(V.PAD)
    pad = -1 if pad is None else pad
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):  # a dataset with splits: the first split by name
            ds = ds[sorted(ds.keys())[0]]
        if text_column not in ds.column_names:
            raise AuditError(f"{path}: text column {text_column!r} not in {ds.column_names}; pass --text-column")

        def hf():
            for i in range(0, len(ds), block):
                yield ds[i : i + block][text_column]

        return tok, pad, (b for texts in hf() for b in _text_blocks(iter(texts), tok, block)), len(ds)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise AuditError(f"{path}: no *.txt files, no manifest.json, no Hugging Face dataset; nothing to audit")

    def lines():
        for f in files:
            with open(f, encoding="utf-8", errors="replace") as fh:
                yield from fh

    return tok, pad, _text_blocks(lines(), tok, block), None


# ---- per-document counting -----------------------------------------------------------------------
def doc_counts(docs: list[np.ndarray], tokenizer, families: list[str], pad: int, k: int = 16) -> dict:
    """``{family: {mode: (rule per doc, prior per doc)}}`` for one block, pooled over cue classes;
    the support counter's per-document definitions (:func:`runner.data.support.documents`,
    :func:`runner.data.support.window_events`): a window never crosses a document."""
    block = documents(docs, pad, k)
    n = block.n
    out: dict = {}
    for name in families:
        fam = RULES.get(name)
        rule_w, prior_w = np.zeros(n, np.int32), np.zeros(n, np.int32)
        for ids in class_ids(fam, tokenizer):
            rule, prior, _ = window_events(block, ids, k)
            rule_w += rule.astype(np.int32)
            prior_w += prior.astype(np.int32)
        modes = {"windowed": (rule_w, prior_w)}
        if isinstance(fam, InductionRule) and "contested" in fam.support_modes:
            t = template_ids(fam, tokenizer)
            rule_c, prior_c = np.zeros(n, np.int32), np.zeros(n, np.int32)
            for i, (row, pos) in enumerate(zip(block.rows.tolist(), cue_positions_by_row(block.rows, t))):
                for _, won in scan_contested(row, t, pos):
                    if won:
                        rule_c[i] += 1
                    else:
                        prior_c[i] += 1
            modes["contested"] = (rule_c, prior_c)
        out[name] = modes
    return out


def _count_block(args):
    docs, tok_json, families, pad, k = args
    from tokenizers import Tokenizer

    return doc_counts(docs, Tokenizer.from_str(tok_json), families, pad, k), int(sum(len(d) for d in docs))


def bootstrap_ratio(rule: np.ndarray, prior: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    max_units: int = 20_000) -> list[float]:
    """95% percentile CI of (sum rule + 1) / (sum prior + 1), resampling documents (or contiguous
    blocks of documents when there are more than ``max_units``)."""
    if len(rule) > max_units:
        edges = np.linspace(0, len(rule), max_units // 20 + 1).astype(int)
        rule, prior = np.add.reduceat(rule, edges[:-1]), np.add.reduceat(prior, edges[:-1])
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(rule), np.full(len(rule), 1 / len(rule)), size=n_boot)
    ratios = (w @ rule + 1) / (w @ prior + 1)
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


@dataclass
class AuditResult:
    corpus: str
    n_docs: int
    n_tokens: int
    seconds: float
    families: dict  # family -> mode -> {rule, prior, ratio, ci}

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else float("nan")


def audit_corpus(path: str | Path, families: list[str], *, text_column: str = "text", tokenizer: str | None = None,
                 k: int = 16, block: int = 4096, workers: int = 1, progress=None, n_boot: int = 1000) -> AuditResult:
    """Count every family's support per document over the whole corpus, streaming; see the module
    docstring for the method. ``workers`` > 1 counts blocks in that many processes."""
    import time

    for f in families:
        if isinstance(RULES.get(f), RuleVsPrior):
            raise AuditError(f"{f}: a rule-versus-prior family; audit it with runner.analysis.audit_rvp.audit_rvp")
    t0 = time.time()
    tok, pad, blocks, n_total = read_documents(path, text_column=text_column, tokenizer_path=tokenizer, block=block)
    parts: dict = {f: {} for f in families}
    n_docs = n_tokens = 0

    def add(res, ntok):
        nonlocal n_docs, n_tokens
        for f, modes in res.items():
            for m, (r, p) in modes.items():
                parts[f].setdefault(m, ([], []))
                parts[f][m][0].append(r)
                parts[f][m][1].append(p)
        n_docs += len(next(iter(next(iter(res.values())).values()))[0])
        n_tokens += ntok
        if progress:
            progress(n_docs, n_total)

    if workers > 1:
        from multiprocessing import get_context

        tok_json = tok.to_str()
        with get_context("spawn").Pool(workers) as pool:
            for res, ntok in pool.imap(_count_block, ((b, tok_json, families, pad, k) for b in blocks), chunksize=1):
                add(res, ntok)
    else:
        for b in blocks:
            add(doc_counts(b, tok, families, pad, k), int(sum(len(d) for d in b)))
    if n_docs == 0:
        raise AuditError(f"{path}: no documents found")
    out: dict = {}
    for f, modes in parts.items():
        out[f] = {}
        for m, (rs, ps) in modes.items():
            r, p = np.concatenate(rs), np.concatenate(ps)
            rule, prior, none = int(r.sum()), int(p.sum()), r.sum() + p.sum() == 0  # none: no event, no ratio
            out[f][m] = {"rule": rule, "prior": prior, "ratio": None if none else (rule + 1) / (prior + 1),
                         "ci": None if none else bootstrap_ratio(r, p, n_boot)}
    return AuditResult(str(path), n_docs, n_tokens, time.time() - t0, out)


# ---- calibration -----------------------------------------------------------------------------------
def survival_line(k: Classifier) -> float:
    """The final above which an UNSTABLE or PARTIAL run counts as survived: the midpoint of
    the DISPLACED and RECOVERED thresholds."""
    return (k.displaced + k.recovered) / 2


def survived(p: dict, k: Classifier | None = None) -> bool:
    """RECOVERED -> True, DISPLACED -> False, others by final against the survival line of ``k``,
    else of the classifier the point's run was labelled with (``p["classifier"]``), else the
    paper's."""
    if p["label"] in (RECOVERED, DISPLACED):
        return p["label"] == RECOVERED
    k = k or (Classifier(**p["classifier"]) if "classifier" in p else Classifier())
    return p["final"] >= survival_line(k)


def calibration_points(sweeps: list[str | Path], family: str, mode: str, locked: Locked | None = None) -> list[dict]:
    """(run, support ratio the run saw, label, final, survived) for every complete run in the sweeps,
    each labelled as the verdict labels it under ``locked`` (the constants in force for its data;
    quarantined seeds stay sealed); default: no prereg, the paper's constants."""
    locked = locked or unregistered()
    pts = []
    for sw in sweeps:
        for d in find_runs(sw):
            v = run_verdict(d, locked)
            f = v["families"].get(family)
            if not v.get("complete") or not f or "final" not in f:
                continue
            ratio = (support_ratio(d, family) or {}).get(mode)
            if ratio is not None:
                p = {"run": d.name, "sweep": str(sw), "ratio": ratio, "label": f["label"], "final": f["final"],
                     "classifier": v["classifier"]}
                line = survival_line(Classifier(**v["classifier"]))
                pts.append({**p, "survived": survived(p), "survival_line": line})
    return pts


@dataclass
class Calibration:
    """A fitted calibration of one family and support mode (:func:`calibrate`); ``to_json`` is the
    ``<sweep>/calibration/<family>-<mode>.json`` document the report reads."""

    family: str
    mode: str
    sweeps: list[str]
    classifier: Classifier  # the locked constants (amendments apply per run, see ``points``)
    prereg: dict | None  # {"path", "sha256"} of the locked prereg; None without one
    points: list[dict]
    fit: dict
    audited: dict | None = None  # {"corpus", "rule", "prior", "ratio", "ci", "call"} once assessed

    @property
    def survival_lines(self) -> list[float]:
        return sorted({p["survival_line"] for p in self.points})

    def assess(self, corpus: str | Path, counts: dict) -> str:
        """The call on an audited corpus's ``counts`` (``{rule, prior, ratio, ci}``), kept in ``audited``."""
        call = risk(counts["ci"], self.fit)
        self.audited = {"corpus": str(corpus), **counts, "call": call}
        return call

    def to_json(self) -> dict:
        return {"family": self.family, "mode": self.mode, "sweeps": self.sweeps, "prereg": self.prereg,
                "classifier": asdict(self.classifier), "survival_lines": self.survival_lines,
                "points": self.points, "fit": self.fit, "audited": self.audited,
                "call": (self.audited or {}).get("call")}


def calibrate(sweeps: list[str | Path], family: str, mode: str | None = None, locked: Locked | None = None,
              n_boot: int = 500) -> Calibration:
    """Points from the sweeps' complete runs, labelled under ``locked`` (default: no prereg, the
    paper's constants), and the f* fit on them; see the module docstring."""
    RULES.get(family)
    mode = mode or default_mode(family)
    pts = calibration_points(sweeps, family, mode, locked)
    prereg = {"path": locked.path, "sha256": locked.record["sha256"]} if locked and locked.record["sha256"] else None
    k = (locked or unregistered()).classifier_at(None)
    return Calibration(family, mode, [str(s) for s in sweeps], k, prereg, pts, fit_critical_ratio(pts, n_boot))


def fit_critical_ratio(points: list[dict], n_boot: int = 500, seed: int = 0,
                       classifier: Classifier | None = None) -> dict:
    """f* (the ratio where the final label turns from displaced to recovered) with an interval;
    survival as :func:`survived` calls it (``classifier``, else each point's own)."""
    from scipy.optimize import minimize

    use = [p for p in points if p["label"] not in (NEVER, INCOMPLETE)]
    x = np.log([max(p["ratio"], 1e-9) for p in use])
    y = np.array([survived(p, classifier) for p in use], float)
    base = {"n_points": len(use), "n_recovered": int(y.sum()), "n_displaced": int(len(y) - y.sum()),
            "left_out": [p["run"] for p in points if p not in use]}
    if y.sum() == 0 or y.sum() == len(y):
        return {**base, "method": "none", "f_star": None, "ci": None,
                "why": "the calibration needs both recovered and displaced runs"}
    hi_disp, lo_rec = x[y == 0].max(), x[y == 1].min()
    if hi_disp < lo_rec:
        return {**base, "method": "separated", "f_star": float(np.exp((hi_disp + lo_rec) / 2)),
                "ci": [float(np.exp(hi_disp)), float(np.exp(lo_rec))]}

    def fit(xs, ys):
        nll = lambda w: np.sum(np.logaddexp(0, -(2 * ys - 1) * (w[0] + w[1] * xs))) + 1e-3 * w[1] ** 2  # noqa: E731
        w = minimize(nll, np.array([0.0, 1.0]), method="BFGS").x
        return float(np.exp(-w[0] / w[1])) if w[1] > 0 else None

    f = fit(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if 0 < y[i].sum() < len(i):
            b = fit(x[i], y[i])
            if b is not None:
                boots.append(b)
    ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if boots else None
    return {**base, "method": "logistic", "f_star": f, "ci": ci}


def risk(ratio_ci: list[float], fit: dict) -> str:
    """at risk / safe / undetermined: the corpus ratio's CI against f*'s interval."""
    if not fit.get("ci"):
        return "undetermined"
    lo, hi = fit["ci"]
    if ratio_ci[1] < lo:
        return "at risk"
    if ratio_ci[0] > hi:
        return "safe"
    return "undetermined"


def default_mode(family: str) -> str:
    fam = RULES.get(family)
    return "contested" if "contested" in fam.support_modes else fam.support_modes[0]
