"""Support counting throughput on a BPE stream: tokens/s of the rule-versus-prior counters.

    python bench/support_count.py [--tokens 50000000] [--tokenizer PATH] [--repeat 3]

Two streams, each tokenized with a byte-level BPE tokenizer (default: the paper's TinyStories
BPE-8192 from ``../shared/reference/tokenizers``), an end-of-text token before every document,
repeated to ``--tokens`` tokens (uint16):

- ``real``: real English, the King James Bible chapters of ``tests/data/kjv_sample.jsonl.gz``
  (one document per chapter);
- ``dense``: eight short story paragraphs written so that about a third of all tokens start a
  cue, answer or frame (names, gendered nouns, she/he, herself/himself, a/an): a worst case.

Times ``count_rvp`` (all modes: windowed, frame, a/an) over all seven paper families together and
over each family alone, on one core (numpy, one thread), best of ``--repeat``; prints tokens per
second of the process's CPU time (what one core does, whatever else runs on the machine) and of
wall time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from runner.data.matching import TokenStream, TokenTable  # noqa: E402
from runner.data.rvp_support import count_rvp  # noqa: E402
from runner.world.rvp import PAPER_FAMILIES  # noqa: E402

DEFAULT_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "reference" / "tokenizers" / \
    "tinystories-bpe8192.json"
TEXT = """Lily was sad because she lost her ball. Her mom smiled when she found it under an old tree.
Tom wanted an apple, but he got a big orange. The boy laughed because he liked oranges too.
One day, Emma saw an owl in the garden. She washed herself and ran home because she was cold.
The king said that he would give the princess a gift. The princess thanked him and hugged her sister.
Max hurt himself on a rock. His dad gave him a hug, and Max felt better. Then he ate an egg.
Sue and Ben played with a cat. Ben said he was happy. Sue said she was happy too, and they laughed.
The old woman had an umbrella. When it rained, she opened it and walked to the shop with a dog.
Grace enjoyed herself at the park. A girl gave her a flower, and Grace said thank you to the girl."""


SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "kjv_sample.jsonl.gz"


def texts(kind: str) -> list[str]:
    if kind == "dense":
        return [p.strip() for p in TEXT.splitlines() if p.strip()]
    import gzip
    import json

    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def stream_of(tokenizer, docs: list[str], n_tokens: int) -> TokenStream:
    """``docs`` tokenized, each after an end-of-text token, repeated to ``n_tokens``."""
    eot = tokenizer.token_to_id("<|endoftext|>")
    one = np.concatenate([np.asarray([eot] + e.ids, dtype=np.uint16) for e in tokenizer.encode_batch(docs)])
    ids = np.tile(one, n_tokens // len(one) + 1)[:n_tokens]
    return TokenStream.from_flat(ids, [eot])


def best_rate(stream: TokenStream, table: TokenTable, families, repeat: int) -> tuple[float, float, dict]:
    """(tokens per CPU second, tokens per wall second, counts), each the best of ``repeat``."""
    cpu = wall = float("inf")
    res: dict = {}
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        res = count_rvp(stream, table, families)
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - w)
    return stream.n / cpu, stream.n / wall, res


def main() -> None:
    from tokenizers import Tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=50_000_000)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tok = Tokenizer.from_file(str(a.tokenizer))
    table = TokenTable.of(tok)
    for kind in ("real", "dense"):
        stream = stream_of(tok, texts(kind), a.tokens)
        print(f"\n{kind} stream: {stream.n:,} tokens, {stream.n_docs:,} documents, tokenizer {a.tokenizer.name}; "
              f"best of {a.repeat}, one core; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"  {'families':<38}{'M tokens/CPU-s':>15}{'M tokens/wall-s':>17}")
        cpu, wall, res = best_rate(stream, table, PAPER_FAMILIES, a.repeat)
        print(f"  {'all 7 paper families, every mode':<38}{cpu / 1e6:15.1f}{wall / 1e6:17.1f}")
        for f in PAPER_FAMILIES:
            cpu, wall, _ = best_rate(stream, table, [f], a.repeat)
            print(f"  {f:<38}{cpu / 1e6:15.1f}{wall / 1e6:17.1f}")
        noun = res["pronoun_gender_noun"]["feminine"]["windowed"]
        print(f"  check: pronoun_gender_noun feminine windowed rule {noun['rule']:,} prior {noun['prior']:,}")


if __name__ == "__main__":
    main()
