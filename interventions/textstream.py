"""An intervened real-text stream: a ``built:`` corpus's flat token stream with an edit applied,
written beside it in the real-text format, so that ``load_corpus`` reads it as it reads the base.

A real-text corpus (:mod:`runner.data.textcorpus`) is one flat little-endian int32 stream
(``tokens.npy``; every document preceded by the end-of-text token, no padding), its tokenizer and a
manifest. The edited stream's folder holds:

- ``tokens.npy``: the edited stream (same dtype and layout; a run cuts it into rows of its own
  length, as it cuts the base);
- ``tokenizer.json``: the base's, copied byte for byte;
- ``manifest.json``: the base's conventions (``format``, ``bos_id``, ``eot_id``, ``pad_id``,
  ``row_tokens``, ``vocab_size``, the tokenizer's record and sha256), the new ``n_tokens``,
  ``n_docs`` and ``sha256`` (hashed block by block exactly as the loader checks it:
  :func:`runner.data.shards.stream_digest`), ``config`` (what names the stream, compared on reuse),
  ``generator`` (the edit's record), ``base`` (path, sha256, token count) and ``support`` (counted
  on the edited stream, :func:`stream_support`).

It is written in a temporary sibling folder and renamed into place; a finished copy written
meanwhile by a concurrent builder of the same stream is kept. Memory: the base stream stays
memory-mapped read-only; an edit copies it once (:func:`editable_copy`) and edits that copy in
place; writing and hashing read the copy without copying it again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from runner._io import make_temp_dir, utcnow, write_json_atomic
from runner.data.corpora import TEXT_FORMAT
from runner.data.matching import CHUNK, TokenStream, separator_ids
from runner.data.rvp_support import count_rvp
from runner.data.shards import stream_digest
from runner.data.support import count_support
from runner.world.rules import RULES
from runner.world.rvp import RuleVsPrior

# What an edited stream copies from its base's manifest unchanged (absent keys are skipped).
KEPT = ("tokenizer", "conventions", "bos_id", "eot_id", "pad_id", "vocab_size", "row_tokens")


def flat_stream(base) -> TokenStream:
    """A real-text corpus's whole stream (memory-mapped; the tail past its last whole row
    included) as a :class:`TokenStream` whose documents start at its separator tokens (as
    ``TokenStream.from_flat`` splits it, the separators found :data:`CHUNK` tokens at a time)."""
    ids, seps = base.stream, separator_ids(base.tokenizer)
    cuts = [np.flatnonzero(np.isin(ids[i : i + CHUNK], seps)).astype(np.int64) + i for i in range(0, len(ids), CHUNK)]
    starts = np.concatenate([np.zeros(0, np.int64), *cuts])  # sorted and unique already
    if not len(starts) or starts[0] != 0:
        starts = np.concatenate([np.zeros(1, np.int64), starts])
    return TokenStream(ids, starts)


def editable_copy(base) -> np.ndarray:
    """The one in-memory copy of a real-text corpus's stream that an edit writes into."""
    return np.array(base.stream, dtype="<i4")


def stream_support(stream: TokenStream, tok, families, row_tokens: int) -> dict:
    """``{family: {class: {mode: counts}}}`` on a real-text stream, as ``corpus_support`` counts a
    real-text corpus: rule-versus-prior families over the whole stream (documents split at the
    end-of-text tokens), the built-in families per row of ``row_tokens`` (the corpus's own rows),
    with the same modes, so the base's support and the edited stream's compare like with like."""
    families = list(dict.fromkeys(families))
    rvp = [f for f in families if isinstance(RULES.get(f), RuleVsPrior)]
    out = count_rvp(stream, tok, rvp) if rvp else {}
    other = [f for f in families if f not in rvp]
    if other:
        n = stream.n // row_tokens
        rows = stream.ids[: n * row_tokens].reshape(n, row_tokens)  # a view
        out.update(count_support(rows, tok, other, pad_id=-1))
    return {f: out[f] for f in families}


def count_id(ids: np.ndarray, token: int) -> int:
    """How many times ``token`` occurs in ``ids``, read :data:`CHUNK` tokens at a time."""
    return int(sum(np.count_nonzero(ids[i : i + CHUNK] == token) for i in range(0, len(ids), CHUNK)))


def text_manifest(ids: np.ndarray, base, config: dict, generator: dict, support: dict) -> dict:
    """The manifest of an edited real-text stream (see the module docstring)."""
    bm = base.manifest
    eot = int(bm["eot_id"])
    return {"format": TEXT_FORMAT, "config": config, "generator": generator,
            "base": {"path": str(base.path), "sha256": bm["sha256"], "n_tokens": int(bm["n_tokens"]),
                     "spec": bm.get("spec")},
            **{k: bm[k] for k in KEPT if k in bm},
            "n_docs": count_id(ids, eot), "n_tokens": int(len(ids)), "n_rows": int(len(ids)) // int(bm["row_tokens"]),
            "sha256": stream_digest(ids), "created": utcnow(timespec="seconds"), "support": support}


def write_text_stream(dest: Path, ids: np.ndarray, base, config: dict, generator: dict, support: dict) -> Path:
    """Write the edited stream ``ids`` of the real-text corpus ``base`` at ``dest`` (atomically;
    see the module docstring); returns ``dest``."""
    if ids.ndim != 1 or ids.dtype != np.dtype("<i4"):
        raise ValueError(f"an edited real-text stream must be flat little-endian int32, got {ids.dtype} {ids.shape}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest.parent, f".{dest.name}.tmp-")  # the umask's mode, not 0700
    try:
        np.save(tmp / "tokens.npy", ids)
        shutil.copyfile(base.path / "tokenizer.json", tmp / "tokenizer.json")
        write_json_atomic(tmp / "manifest.json", text_manifest(ids, base, config, generator, support))
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "manifest.json").exists():  # not a concurrent builder's finished copy
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
