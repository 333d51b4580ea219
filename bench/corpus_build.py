"""Real-text corpus build: throughput (MB of text per second) and peak memory of the whole process tree.

    nice python bench/corpus_build.py [--gb 1.0] [--tokenizer PATH|bpe:8192] [--workers N] [--bpe-train-mb 256]

Writes --gb GB of text (UTF-8 bytes of the documents) as JSONL in a temporary folder by repeating
the shipped sample (tests/data/kjv_sample.jsonl.gz, 1.7 MB, 384 documents), then runs
`ungrok corpus build --source text:<that file> --tokenizer ... --name bench` as a child process
and samples the RSS of that process and all its children (the tokenizing workers) every 0.1 s.
Prints the build's own timings from its manifest (tokenizer, then tokenizing + assembly), the
text throughput of the tokenizing phase and of the whole build, and the peak RSS of the tree.

Caveat: repeated text is kinder to the BPE's word cache than fresh text of the same size, so the
throughput here is an upper bound for the tokenizing phase; memory is not flattered (the pipeline
never holds more than a few blocks, whatever the text).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "kjv_sample.jsonl.gz"
PAPER_TOKENIZER = ROOT.parent / "shared" / "reference" / "tokenizers" / "web-bpe8192.json"


def write_text(path: Path, gb: float) -> int:
    """JSONL of the sample's documents, repeated until ``gb`` GB of text; returns the text bytes."""
    lines = [json.loads(line)["text"] for line in gzip.open(SAMPLE, "rt")]
    target, n = int(gb * 1e9), 0
    with open(path, "w") as f:
        while n < target:
            for t in lines:
                f.write(json.dumps({"text": t}) + "\n")
                n += len(t.encode())
                if n >= target:
                    break
    return n


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_build(args: list[str]) -> tuple[int, float, int, float]:
    """(exit code, wall seconds, peak RSS of the process tree in bytes, CPU seconds of the tree)."""
    t0 = time.time()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.1)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the build and the workers it waited for
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return child.returncode, time.time() - t0, peak, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--tokenizer", default=str(PAPER_TOKENIZER) if PAPER_TOKENIZER.exists() else "bpe:8192")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bpe-train-mb", type=int, default=256)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ungrok-bench-") as tmp:
        src = Path(tmp) / "text.jsonl"
        t = time.time()
        n_text = write_text(src, a.gb)
        print(f"wrote {n_text / 1e6:,.0f} MB of text ({src.stat().st_size / 1e6:,.0f} MB of JSONL) "
              f"in {time.time() - t:.0f} s")
        out = Path(tmp) / "corpora"
        load = os.getloadavg()[0]
        rc, wall, peak, cpu = run_build(["corpus", "build", "--source", f"text:{src}", "--tokenizer", a.tokenizer,
                                    "--name", "bench", "--out", str(out), "--workers", str(a.workers),
                                    "--bpe-train-mb", str(a.bpe_train_mb)])
        if rc != 0:
            sys.exit(f"build failed (exit {rc})")
        m = json.loads((out / "bench" / "manifest.json").read_text())
        b = m["build"]
        tokenize = b["seconds"] - b["seconds_tokenizer"]
        mb = m["n_text_bytes"] / 1e6
        print(f"tokenizer {a.tokenizer}: {b['seconds_tokenizer']:.1f} s "
              f"({m['tokenizer'].get('trained_on_bytes', 0) / 1e6:,.0f} MB read to train it)")
        print(f"tokenizing + assembly: {mb:,.0f} MB -> {m['n_tokens']:,} tokens in {tokenize:.1f} s = "
              f"{mb / tokenize:.2f} MB/s ({m['n_tokens'] / tokenize:,.0f} tokens/s), {b['workers']} workers, "
              f"{b['shards']} shards")
        print(f"whole build (process start to exit): {wall:.1f} s = {mb / wall:.2f} MB/s; CPU time of the tree "
              f"{cpu:.0f} s = {mb / cpu:.2f} MB per CPU-second (x cores: what an idle machine would reach)")
        print(f"peak RSS of the process tree: {peak / 2**30:.2f} GiB ({os.cpu_count()} cores, "
              f"1-min load average at the start: {load:.1f})")


if __name__ == "__main__":
    main()
