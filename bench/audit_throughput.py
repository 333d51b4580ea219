"""Audit throughput on a >= 50M-token stream: tokens/s of `ungrok audit`'s counter, 1 and N workers.

    python bench/audit_throughput.py [--rows 850000] [--workers 2]

Builds (once, under runs/bench/corpora) a built-in `web` corpus of --rows stories (~60.5 tokens
each: 850,000 rows = ~51M tokens), then audits both rule families (windowed and contested counts,
per-document, with bootstrap CIs) and prints tokens/s for 1 process and for --workers processes.
"""

from __future__ import annotations

import argparse
import os
import time

from runner.analysis.audit import audit_corpus
from runner.config import CorpusConfig
from runner.data.corpora import build_corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=850_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    t = time.time()
    path = build_corpus(CorpusConfig(name="web", n_stories=a.rows, seed=0), "runs/bench/corpora")
    print(f"corpus {path} ready in {time.time() - t:.0f} s")
    fams = ["pronoun_gender", "number_agreement"]
    rows = []
    for w in sorted({1, a.workers}):
        r = audit_corpus(path, fams, workers=w)
        contested = r.families['pronoun_gender']['contested']
        rows.append((w, r))
        print(f"workers {w}: {r.n_tokens:,} tokens, {r.n_docs:,} documents in {r.seconds:.1f} s = "
              f"{r.tokens_per_second:,.0f} tokens/s; pronoun_gender contested ratio "
              f"{contested['ratio']:.3f} {contested['ci']}")
    if len(rows) == 2:
        print(f"speed-up with {rows[1][0]} workers: {rows[1][1].tokens_per_second / rows[0][1].tokens_per_second:.2f}x "
              f"(same run, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
