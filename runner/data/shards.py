"""Tokenize a stream of documents into shards on disk, in parallel, then assemble one token file.

The method, and why it needs little memory:

1. The calling process reads documents in order and cuts them into blocks of about
   ``block_bytes`` of text. Each block is tokenized by a worker process (``workers`` of them,
   default: every core; each worker runs the tokenizer single-threaded) and written as one shard
   (``shard-<index>.npy``: the block's documents, each preceded by the end-of-text id, as one
   flat int32 array). At most ``2 x workers`` blocks are in flight, so memory holds a few blocks,
   never the corpus.
2. Shards come back in block order; reading stops once they hold ``max_tokens`` tokens (blocks
   already in flight past the cap are dropped).
3. :func:`assemble` streams the shards, in order, into one flat ``.npy`` file (the token stream,
   truncated to exactly ``max_tokens``), hashing as it writes (sha256 of the little-endian int32
   stream) and deleting each shard once copied.

Documents are tokenized independently, so the stream is the same whatever the block size or
number of workers: a pure function of (documents in order, tokenizer, cap). A source small enough
for one block is tokenized in the calling process (with the tokenizer's own threads), no pool.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_WORKER: dict = {}


@dataclass
class ShardStats:
    """What a shard pass read and wrote (per shard: path and token count, in order)."""

    shards: list[tuple[Path, int]] = field(default_factory=list)
    n_docs: int = 0
    n_bytes: int = 0  # UTF-8 bytes of the documents tokenized
    n_tokens: int = 0  # in the shards kept (may exceed the cap; assemble truncates)
    capped: bool = False  # reading stopped at the token cap

    def add(self, path: Path, n_tokens: int, n_docs: int, n_bytes: int) -> None:
        self.shards.append((path, n_tokens))
        self.n_tokens += n_tokens
        self.n_docs += n_docs
        self.n_bytes += n_bytes


def blocks(docs: Iterable[str], block_bytes: int) -> Iterator[list[str]]:
    """Consecutive lists of documents of about ``block_bytes`` UTF-8 bytes (at least one each)."""
    buf: list[str] = []
    size = 0
    for d in docs:
        buf.append(d)
        size += len(d.encode("utf-8"))
        if size >= block_bytes:
            yield buf
            buf, size = [], 0
    if buf:
        yield buf


def encode_block(tokenizer, docs: list[str], eot_id: int) -> np.ndarray:
    """``[eot] + ids(doc)`` for every document, concatenated, as int32."""
    encs = tokenizer.encode_batch_fast(docs, add_special_tokens=False)
    parts = []
    for e in encs:
        parts.append(np.asarray([eot_id], dtype=np.int32))
        parts.append(np.asarray(e.ids, dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def _init_worker(tokenizer_json: str, eot_id: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the pool is the parallelism
    from tokenizers import Tokenizer

    _WORKER["tok"] = Tokenizer.from_str(tokenizer_json)
    _WORKER["eot"] = eot_id


def _work(job: tuple[int, list[str], str]) -> tuple[int, int, int, int]:
    index, docs, path = job
    ids = encode_block(_WORKER["tok"], docs, _WORKER["eot"])
    np.save(path, ids)
    return index, int(ids.size), len(docs), sum(len(d.encode("utf-8")) for d in docs)


def _shard_path(tmp: Path, index: int) -> str:
    return str(tmp / f"shard-{index:06d}.npy")


def tokenize_to_shards(docs: Iterable[str], tokenizer, eot_id: int, tmp: Path, *, max_tokens: int | None = None,
                       workers: int | None = None, block_bytes: int = 4 << 20,
                       progress: Callable[[int, int], None] | None = None) -> ShardStats:
    """Tokenize ``docs`` into shards under ``tmp`` (see the module doc); ``progress(bytes, tokens)``
    is called as shards complete."""
    stats = ShardStats()
    it = blocks(docs, block_bytes)
    first = next(it, None)
    if first is None:
        return stats
    second = next(it, None)
    workers = max(1, workers or os.cpu_count() or 1)
    if second is None or workers == 1:  # small source, or asked for: tokenize here, block by block
        _inline(_chain(first, second, it), tokenizer, eot_id, tmp, stats, max_tokens, progress)
    else:
        _pooled(_chain(first, second, it), tokenizer.to_str(), eot_id, tmp, stats, max_tokens, workers, progress)
    return stats


def _chain(first, second, rest) -> Iterator[list[str]]:
    yield first
    if second is not None:
        yield second
        yield from rest


def _inline(it, tokenizer, eot_id, tmp, stats, max_tokens, progress) -> None:
    for index, docs in enumerate(it):
        ids = encode_block(tokenizer, docs, eot_id)
        path = Path(_shard_path(tmp, index))
        np.save(path, ids)
        stats.add(path, int(ids.size), len(docs), sum(len(d.encode("utf-8")) for d in docs))
        if progress:
            progress(stats.n_bytes, stats.n_tokens)
        if max_tokens is not None and stats.n_tokens >= max_tokens:
            stats.capped = True
            return


def _pooled(it, tokenizer_json, eot_id, tmp, stats, max_tokens, workers, progress) -> None:
    """Blocks to a spawn pool (no fork of a process whose tokenizer threads have run), at most
    ``2 x workers`` in flight, results taken in block order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(tokenizer_json, eot_id)) as pool:
        pending: deque = deque()
        index = 0
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < 2 * workers:
                docs = next(it, None)
                if docs is None:
                    exhausted = True
                    break
                pending.append(pool.submit(_work, (index, docs, _shard_path(tmp, index))))
                index += 1
            if not pending:
                break
            i, n_tok, n_docs, n_bytes = pending.popleft().result()
            stats.add(Path(_shard_path(tmp, i)), n_tok, n_docs, n_bytes)
            if progress:
                progress(stats.n_bytes, stats.n_tokens)
            if max_tokens is not None and stats.n_tokens >= max_tokens:
                stats.capped = True
                for f in pending:  # past the cap: wait for them (they write files), then drop them
                    f.cancel()
                break


def assemble(stats: ShardStats, dest: Path, max_tokens: int | None = None) -> tuple[int, str]:
    """Write the shards, in order, as one flat little-endian int32 ``.npy`` at ``dest`` (cut at
    ``max_tokens``), deleting each shard once copied; returns (tokens written, sha256 of the
    stream's bytes). The header is written first from the known length, the data appended shard
    by shard: memory holds one shard."""
    total = stats.n_tokens if max_tokens is None else min(stats.n_tokens, max_tokens)
    h = hashlib.sha256()
    written = 0
    with open(dest, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<i4", "fortran_order": False, "shape": (total,)})
        for path, _ in stats.shards:
            part = np.ascontiguousarray(np.load(path)[: total - written], dtype="<i4")
            f.write(part.tobytes())
            h.update(part.data)
            written += part.size
            os.unlink(path)
    return written, h.hexdigest()


def stream_digest(stream: np.ndarray, block: int = 1 << 24) -> str:
    """sha256 of a flat token stream's little-endian int32 bytes, read ``block`` tokens at a time
    (a memory-mapped stream is never copied whole)."""
    h = hashlib.sha256()
    for i in range(0, stream.shape[0], block):
        h.update(np.ascontiguousarray(stream[i : i + block], dtype="<i4").data)
    return h.hexdigest()
