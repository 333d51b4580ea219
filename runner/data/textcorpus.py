"""Build a real-text corpus: a source (``runner.data.sources``), a tokenizer
(``runner.data.tokenizers``), and a sharded, parallel tokenization (``runner.data.shards``).

The folder ``<out>/<name>/`` holds:

- ``tokens.npy``: the token stream, flat little-endian int32. Every document is preceded by the
  end-of-text token (``<|endoftext|>``), which is also the BOS: a probe prompt, given the same id
  before it, reads like the start of a document. There is no padding (``pad_id`` -1): a run cuts
  the stream into rows of its context length (``CorpusConfig.story_tokens``), so rows cross
  document boundaries as in the paper's packed batches, and one build serves any context length.
- ``tokenizer.json``: the tokenizer (trained or copied), named in the manifest by its sha256.
- ``manifest.json``: the spec it was built from; the source's record (kind, name or files,
  split, revision: the hub commit, the cached copy's, or the files' sha256); the tokenizer's
  record and sha256; the conventions (``bos_id``, ``eot_id``, ``pad_id``); document, byte and
  token counts; whether the token cap cut the stream; the stream's sha256.

It is written in a temporary sibling folder and renamed into place when complete, so a failed or
interrupted build leaves nothing behind; a folder that already holds the same spec is reused, one
that holds another is an error (never overwritten). Bad input (no such source, a missing text
column, a tokenizer that does not load, no text at all) raises :class:`CorpusError` naming the
fix, before the folder exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runner._io import make_temp_dir, utcnow, write_json_atomic, write_text_atomic
from runner.data.corpora import TEXT_FORMAT, CorpusError
from runner.data.shards import assemble, tokenize_to_shards
from runner.data.sources import SourceRequest, open_source
from runner.data.tokenizers import EOT, check_tokenizer_spec, choose_tokenizer
from runner.world.presets import PRESETS

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class TextCorpusSpec(BaseModel):
    """What a real-text corpus is built from (everything that decides its bytes).

    ``source``: ``hf:<hub name or datasets folder>`` or ``text:<files or glob>``. ``tokenizer``:
    ``bpe:<size>`` (trained on the first ``bpe_train_bytes`` of text) or a tokenizer file/folder.
    ``max_tokens``: cap on the stream (None: the whole source). ``row_tokens``: the row length
    when the corpus is opened without one (a run uses its own ``story_tokens``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str
    tokenizer: str = "bpe:8192"
    text_column: str = "text"
    split: str = "train"
    config: str | None = None
    revision: str | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    eot_token: str = EOT
    bpe_train_bytes: int = Field(default=256 << 20, gt=0)
    row_tokens: int = Field(default=2048, ge=16)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"name {v!r}: use letters, digits, '.', '_' and '-' (a folder name), e.g. tinystories")
        if v in PRESETS:
            raise ValueError(f"name {v!r} is a built-in corpus; choose another name")
        return v

    def request(self) -> SourceRequest:
        return SourceRequest(self.source, self.text_column, self.split, self.config, self.revision)


Progress = Callable[[str, int, int], None]  # (phase, text bytes read, tokens written)


def build_text_corpus(spec: TextCorpusSpec, out_root: str | Path, *, workers: int | None = None,
                      block_bytes: int = 4 << 20, progress: Progress | None = None) -> Path:
    """Build ``spec`` under ``out_root/<spec.name>`` (see the module doc) unless it is there."""
    out_root = Path(out_root).expanduser()
    dest = out_root / spec.name
    if _reuse(dest, spec):
        return dest
    source = open_source(spec.request())  # checks the source and its text column
    check_tokenizer_spec(spec.tokenizer, spec.eot_token)  # a file loads, a size is valid
    created_root = not out_root.exists()
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_root, f".{spec.name}.tmp-")  # the umask's mode, not 0700
    try:
        manifest = _build(spec, source, tmp, workers, block_bytes, progress)
        write_json_atomic(tmp / "manifest.json", manifest)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _reuse(dest, spec):  # not a concurrent builder's finished copy of the same spec
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root and not any(out_root.iterdir()):
            out_root.rmdir()
        raise
    return dest


def _reuse(dest: Path, spec: TextCorpusSpec) -> bool:
    """True when ``dest`` holds this spec already; an error when it holds anything else."""
    if not dest.exists():
        return False
    mf = dest / "manifest.json"
    if not mf.exists():
        raise CorpusError(f"{dest} exists and is not a built corpus; remove it or choose another --name")
    existing = json.loads(mf.read_text()).get("spec")
    if existing != spec.model_dump(mode="json"):
        raise CorpusError(f"{dest} holds a corpus built from other settings ({existing}); remove it or choose "
                          "another --name")
    return True


def _build(spec: TextCorpusSpec, source, tmp: Path, workers, block_bytes, progress) -> dict:
    """Tokenizer, shards, stream, in ``tmp``; returns the manifest."""
    t0 = time.time()
    if progress:
        progress("tokenizer", 0, 0)
    tok = choose_tokenizer(spec.tokenizer, source.documents, eot=spec.eot_token, train_bytes=spec.bpe_train_bytes)
    write_text_atomic(tmp / "tokenizer.json", tok.json)
    t_tok = time.time() - t0
    shard_dir = tmp / "shards"
    shard_dir.mkdir()

    def report(n_bytes: int, n_tokens: int) -> None:
        if progress:
            progress("tokenize", n_bytes, n_tokens)

    stats = tokenize_to_shards(source.documents(), tok.tokenizer, tok.eot_id, shard_dir, max_tokens=spec.max_tokens,
                               workers=workers, block_bytes=block_bytes, progress=report)
    if stats.n_bytes == 0:
        raise CorpusError(f"source {spec.source!r} holds no text ({stats.n_docs} documents, 0 bytes); check "
                          "--source, --split and --text-column")
    n_tokens, sha = assemble(stats, tmp / "tokens.npy", spec.max_tokens)
    shutil.rmtree(shard_dir)  # shards past the cap, if any
    eot_token = tok.tokenizer.id_to_token(tok.eot_id)  # pyright: ignore[reportAttributeAccessIssue]
    return {
        "format": TEXT_FORMAT,
        "spec": spec.model_dump(mode="json"),
        "source": source.record,
        "tokenizer": {**tok.record, "sha256": tok.sha256, "eot_token": eot_token, "eot_id": tok.eot_id},
        "conventions": {"document_start": f"{eot_token} (id {tok.eot_id}) before every document; it is also the "
                                          "BOS put before probe prompts",
                        "padding": "none (pad_id -1): rows are cut from the packed stream"},
        "bos_id": tok.eot_id, "eot_id": tok.eot_id, "pad_id": -1,
        "vocab_size": tok.vocab_size,
        "n_docs": stats.n_docs, "n_text_bytes": stats.n_bytes, "n_tokens": n_tokens,
        "truncated": bool(spec.max_tokens is not None and stats.n_tokens > n_tokens),
        "row_tokens": spec.row_tokens, "n_rows": n_tokens // spec.row_tokens,
        "sha256": sha,
        "created": utcnow(timespec="seconds"),
        "build": {"workers": workers or os.cpu_count() or 1, "block_bytes": block_bytes, "shards": len(stats.shards),
                  "seconds_tokenizer": round(t_tok, 2), "seconds": round(time.time() - t0, 2)},
    }
