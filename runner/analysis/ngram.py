"""The n-gram baseline: do surface statistics of the exact stream a run saw explain its phase pattern?

The paper's control: a Stupid-Backoff n-gram model (Brants et al. 2007; alpha = 0.4, orders 2
and 5) built from the exact token stream each cell saw, scored with the same battery: *it cannot
pass the agree control anywhere, so surface co-occurrence does not explain the phase pattern.*

- **the stream**: every row the run read, step by step, through the run's own data plans (the
  corpus, and the intervened stream inside its window): :func:`seen_rows`. n-grams never cross a
  row (one training sequence) and never contain padding.
- **the score** of token w after context c (the last ``order - 1`` tokens): S(w | c) =
  count(c w) / count(c) when count(c w) > 0, else alpha x S(w | c without its first token); the
  unigram S(w) = count(w) / N, and 1 / (N V) for a token never seen (so a log score is finite). A
  continuation's score is the sum of log S over its tokens, each after the prefix and the
  continuation's earlier tokens (the battery encoded exactly as for the model:
  :func:`runner.scoring.encode_battery`, the run's start token included).
- **figures**: accuracy per (family, condition, split), CM and PM as for the model
  (:func:`runner.scoring.aggregate`), and per family whether the agree control passes
  (heldout agree accuracy >= the classifier's ``control_final``).

Only the n-grams the battery asks about are counted (hashed: id sequences in base V, exact while
V^order < 2^64, else a rare collision), so the pass is a few vectorised numpy passes over the stream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runner.config import RunConfig
from runner.data.corpora import load_corpus
from runner.scoring import aggregate, battery_for, encode_battery
from runner.trajectory import Classifier

BASELINE = "baseline.json"  # the file `ungrok baseline RUN` writes in the run folder

ALPHA = 0.4
ORDERS = (2, 5)
BLOCK = 4096  # rows per counting pass


def _hash(seqs: np.ndarray, base: int) -> np.ndarray:
    """uint64 hash of each row of ``seqs`` (n-grams as rows), base ``base``, wrapping."""
    h = np.zeros(len(seqs), dtype=np.uint64)
    for j in range(seqs.shape[1]):
        h = h * np.uint64(base) + seqs[:, j].astype(np.uint64)
    return h


class StupidBackoff:
    """Counts of the n-grams (orders 1..``order``) a set of queries needs, over rows of token ids."""

    def __init__(self, order: int, vocab: int, alpha: float = ALPHA) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order, self.vocab, self.alpha = order, vocab, alpha
        self.counts: dict[tuple[int, ...], int] = {}
        self.n_tokens = 0

    def needed(self, queries: list[tuple[list[int], int]]) -> set[tuple[int, ...]]:
        """Every n-gram the scores of ``queries`` (context, token) may read."""
        out: set[tuple[int, ...]] = set()
        for ctx, w in queries:
            c = tuple(ctx[len(ctx) - (self.order - 1):]) if self.order > 1 else ()
            for i in range(len(c) + 1):
                out.add(c[i:] + (w,))
                if c[i:]:
                    out.add(c[i:])
        return out

    def fit(self, rows: np.ndarray, pad_id: int, queries: list[tuple[list[int], int]]) -> "StupidBackoff":
        rows = np.asarray(rows)
        want = self.needed(queries)
        by_n: dict[int, list[tuple[int, ...]]] = {}
        for g in want:
            by_n.setdefault(len(g), []).append(g)
        self.n_tokens = int((rows != pad_id).sum())
        self.counts = {g: 0 for g in want}
        for n, grams in by_n.items():
            keys = _hash(np.array(grams, dtype=np.int64), self.vocab)
            order = np.argsort(keys)
            keys = keys[order]
            total = np.zeros(len(keys), dtype=np.int64)
            for lo in range(0, len(rows), BLOCK):
                block = rows[lo : lo + BLOCK]
                if block.shape[1] < n:
                    continue
                win = np.lib.stride_tricks.sliding_window_view(block, n, axis=1).reshape(-1, n)
                win = win[(win != pad_id).all(1)]
                h = _hash(win, self.vocab)
                i = np.searchsorted(keys, h)
                hit = (i < len(keys)) & (keys[np.minimum(i, len(keys) - 1)] == h)
                total += np.bincount(i[hit], minlength=len(keys))
            for k, g in enumerate(np.array(grams, dtype=object)[order]):
                self.counts[tuple(g)] = int(total[k])
        return self

    def score(self, ctx: list[int], w: int) -> float:
        """S(w | ctx) under stupid backoff (not a probability)."""
        c = tuple(ctx[len(ctx) - (self.order - 1):]) if self.order > 1 else ()
        mult = 1.0
        for i in range(len(c) + 1):
            hist = c[i:]
            num = self.counts.get(hist + (w,), 0)
            den = self.counts.get(hist, 0) if hist else self.n_tokens
            if num > 0 and den > 0:
                return mult * num / den
            mult *= self.alpha if hist else 1.0
        return mult / max(self.n_tokens * self.vocab, 1)

    def logscore(self, prefix: list[int], cont: list[int]) -> float:
        return float(sum(np.log(self.score(prefix + cont[:i], t)) for i, t in enumerate(cont)))


def _queries(enc) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], int]]]:
    """(prefix, continuation) per sequence of an encoded battery, and every (context, token) asked."""
    pairs, asked = [], []
    tokens, mask = enc.tokens.numpy(), enc.cont_mask.numpy()
    for s, m in zip(tokens, mask):
        idx = np.flatnonzero(m) + 1  # logits at t predict t + 1
        prefix, cont = s[: idx[0]].tolist(), s[idx].tolist()
        pairs.append((prefix, cont))
        asked += [(prefix + cont[:i], t) for i, t in enumerate(cont)]
    return pairs, asked


def score_battery(rows: np.ndarray, pad_id: int, items, tokenizer, bos_id: int | None, n_ctx: int,
                  orders=ORDERS, control_final: float = Classifier.control_final) -> dict:
    """``{f"order{n}": {figures..., "control_valid": {family: bool}}}`` of n-gram models of each order
    built from ``rows`` and scored on ``items`` (encoded as the model's battery)."""
    enc = encode_battery(list(items), tokenizer, bos_id, n_ctx, pad_id)
    pairs, asked = _queries(enc)
    out = {}
    for n in orders:
        lm = StupidBackoff(n, tokenizer.get_vocab_size()).fit(rows, pad_id, asked)
        lp = np.array([lm.logscore(p, c) for p, c in pairs])
        figs: dict = dict(aggregate(enc.items, lp[: enc.n], lp[enc.n :]))
        fams = sorted({it.family for it in enc.items})
        figs["control_valid"] = {f: figs.get(f"{f}/acc_agree_heldout", 0.0) >= control_final for f in fams}
        out[f"order{n}"] = figs
    return out


def seen_rows(cfg: RunConfig, corpus, dosed, n_params: int) -> np.ndarray:
    """Every row a run read, in order (its corpus's plan, the intervened stream's in its window)."""
    from runner.train.loop import _streams  # the one definition of what a step reads

    streams = _streams(cfg, corpus, dosed, n_params)
    return np.concatenate([streams.batch(s) for s in range(cfg.train.steps)])


def baseline_run(run_dir: str | Path, orders=ORDERS) -> dict:
    """The n-gram baseline of a finished (or any) run folder: built from the exact rows it read,
    scored with its battery; written to ``<run>/baseline.json`` atomically and returned."""
    from runner._io import write_json_atomic
    from runner.scoring import training_bos

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "run.json").exists():
        raise ValueError(f"{run_dir} is not a trained run folder (config.json and run.json); pass a run of "
                         "`ungrok train` or of a sweep's runs/")
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    meta = json.loads((run_dir / "run.json").read_text())
    cut = cfg.corpus.story_tokens if cfg.corpus.is_built else None
    corpus = load_corpus(meta["corpus_path"], cut)
    dosed = load_corpus(meta["intervened_corpus_path"], cut) if meta.get("intervened_corpus_path") else None
    rows = seen_rows(cfg, corpus, dosed, int(meta["n_params"]))
    tok = corpus.tokenizer
    bos = training_bos(tok, corpus.rows, corpus.manifest)
    res = score_battery(rows, corpus.pad_id, battery_for(cfg), tok, bos, cfg.model.n_ctx, orders)
    out = {"run": cfg.run_id, "alpha": ALPHA, "orders": list(orders), "rows_seen": int(len(rows)),
           "tokens_seen": int((rows != corpus.pad_id).sum()), **res}
    write_json_atomic(run_dir / BASELINE, out)
    return out
