"""Where real text comes from: documents, one string each, in a fixed order.

A source is named by a spec string and registered in :data:`SOURCES` by its prefix:

- ``hf:<name>``: a Hugging Face dataset. An existing folder is read as a ``datasets`` folder
  (``Dataset.save_to_disk``); anything else is a hub name (``roneneldan/TinyStories``), read through
  ``datasets`` as a stream: from the hub when online, from the local ``datasets`` cache when
  offline (``HF_DATASETS_OFFLINE=1``/``HF_HUB_OFFLINE=1``) — nothing is loaded whole into memory.
  The revision read is recorded (the hub commit, or the cached copy's).
- ``text:<glob>``: JSONL or text files (``~`` and globs expanded, files in sorted path order;
  ``.gz`` read as gzip). JSONL: one document per line, its ``text_column`` field. Plain text: a
  file is one document, unless it holds lines that are exactly ``<|endoftext|>``, which then
  separate its documents.

Every source reads its documents in the same order every time (row order of the dataset, sorted
file paths, line order), so a corpus built from it is a pure function of (source, revision,
tokenizer, cap). A source is checked (it exists, it has the text column) before anything is
written: :class:`~runner.data.corpora.CorpusError` names the problem and the fix.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runner._io import file_sha256
from runner.data.corpora import CorpusError
from runner.registry import Registry

DOC_SEPARATOR = "<|endoftext|>"  # a line of a plain-text file that separates two documents


@dataclass(frozen=True)
class SourceRequest:
    """What to read: the spec (``hf:...`` / ``text:...``) and how to read it."""

    spec: str
    text_column: str = "text"
    split: str = "train"
    config: str | None = None  # a hub dataset's configuration (subset)
    revision: str | None = None  # a hub dataset's revision (branch, tag or commit)


@dataclass
class Source:
    """An opened source: ``documents()`` yields its texts in order; ``record`` goes into the
    manifest (kind, where, revision, files...)."""

    request: SourceRequest
    record: dict
    _docs: Callable[[], Iterator[str]]

    def documents(self) -> Iterator[str]:
        return self._docs()


# A kind: (request, the spec after its prefix) -> Source
SOURCES: Registry[Callable[[SourceRequest, str], Source]] = Registry("corpus source")


def open_source(req: SourceRequest) -> Source:
    """Open ``req.spec`` with the source registered for its prefix (checked, nothing read yet
    beyond what the check needs)."""
    prefix, sep, rest = req.spec.partition(":")
    if not sep or prefix not in SOURCES or not rest:
        raise CorpusError(f"source {req.spec!r}: give hf:<hub name or datasets folder> or text:<files or glob> "
                          f"(known kinds: {', '.join(SOURCES.names())})")
    return SOURCES.get(prefix)(req, rest)


# ---- Hugging Face datasets ---------------------------------------------------------------------
def _text_of(row: dict, column: str, where: str) -> str:
    if column not in row:
        raise CorpusError(f"{where}: no text column {column!r} (columns {sorted(row)}); pass --text-column")
    value = row[column]
    if not isinstance(value, str):
        raise CorpusError(f"{where}: column {column!r} holds {type(value).__name__}, not text; pass --text-column")
    return value


def _check_column(columns, column: str, where: str) -> None:
    if columns is not None and column not in columns:
        raise CorpusError(f"{where}: text column {column!r} not in columns {sorted(columns)}; "
                          "pass --text-column <one of them>")


def _hf_folder(req: SourceRequest, path: str) -> Source:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(path)
    split = None
    if isinstance(ds, DatasetDict):  # saved with its splits: the requested one, else the first by name
        split = req.split if req.split in ds else sorted(ds.keys())[0]
        ds = ds[split]
    _check_column(ds.column_names, req.text_column, f"dataset folder {path}")
    fingerprint = getattr(ds, "_fingerprint", None)
    record = {"kind": "hf-folder", "path": str(Path(path).resolve()), "split": split,
              "text_column": req.text_column, "n_rows": len(ds), "revision": fingerprint}

    def docs() -> Iterator[str]:
        for batch in ds.select_columns([req.text_column]).iter(batch_size=1024):
            assert isinstance(batch, dict)
            for i, text in enumerate(batch[req.text_column]):
                if not isinstance(text, str):
                    raise CorpusError(f"dataset folder {path}: row value {i} of column {req.text_column!r} is "
                                      f"{type(text).__name__}, not text; pass --text-column")
                yield text

    return Source(req, record, docs)


def _offline() -> bool:
    import datasets.config as dc

    return bool(dc.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true", "TRUE")


def _hf_hub(req: SourceRequest, name: str) -> Source:
    """A hub dataset as a stream: ``load_dataset_builder`` resolves the revision (the hub's commit
    online; the newest cached copy offline) and ``as_streaming_dataset`` reads it lazily."""
    import datasets
    import datasets.config as dc

    datasets.disable_progress_bar()
    where = f"hub dataset {name!r}"
    try:
        builder = datasets.load_dataset_builder(name, req.config, revision=req.revision)
    except Exception as e:  # ConnectionError, FileNotFoundError, DatasetNotFoundError, ValueError
        hint = ("it is not in the local datasets cache "
                f"({dc.HF_DATASETS_CACHE}); run once online to cache it" if _offline() else
                "check the name (and --revision), or pass a datasets folder or text:<files>")
        raise CorpusError(f"{where} cannot be opened ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''});"
                          f" {hint}") from None
    splits = list((builder.info.splits or {}).keys())
    if splits and req.split not in splits:
        raise CorpusError(f"{where}: no split {req.split!r}; pass --split, one of {splits}")
    features = builder.info.features
    _check_column(list(features) if features else None, req.text_column, where)
    try:
        ds = builder.as_streaming_dataset(split=req.split)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CorpusError(f"{where}: split {req.split!r} cannot be streamed ({e}); pass --split") from None
    if not features:  # columns unknown until read: check the first row now, before anything is written
        first = next(iter(ds), None)  # pyright: ignore[reportArgumentType]
        if first is not None:
            _text_of(first, req.text_column, f"{where} row 0")
    record = {"kind": "hf-hub", "name": name, "config": builder.config.name, "split": req.split,
              "text_column": req.text_column, "revision": builder.hash, "requested_revision": req.revision,
              "offline": _offline()}

    def docs() -> Iterator[str]:
        for i, row in enumerate(ds):  # pyright: ignore[reportArgumentType]
            yield _text_of(row, req.text_column, f"{where} row {i}")

    return Source(req, record, docs)


def _hf(req: SourceRequest, rest: str) -> Source:
    path = os.path.expanduser(rest)
    if Path(path).is_dir():
        return _hf_folder(req, path)
    if path.startswith((".", "/", "~")) or rest.count("/") > 1:
        raise CorpusError(f"source hf:{rest}: no dataset folder at {path!r}, and it is not a hub name "
                          "(<owner>/<name>); save one with Dataset.save_to_disk or check the path")
    return _hf_hub(req, rest)


# ---- files -------------------------------------------------------------------------------------
def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _jsonl_docs(path: Path, column: str) -> Iterator[str]:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{n}: not valid JSON ({e.msg}); a .jsonl file holds one JSON object "
                                  "per line") from None
            if not isinstance(row, dict) or column not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise CorpusError(f"{path}:{n}: no text column {column!r} (found {keys}); pass --text-column")
            yield _text_of(row, column, f"{path}:{n}")


def _txt_docs(path: Path) -> Iterator[str]:
    buf: list[str] = []
    with _open_text(path) as f:
        for line in f:
            if line.rstrip("\r\n") == DOC_SEPARATOR:
                if buf:
                    yield "".join(buf)
                buf = []
            else:
                buf.append(line)
    if buf:
        yield "".join(buf)


def _is_jsonl(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".jsonl", ".json", ".ndjson"))


def _files(req: SourceRequest, rest: str) -> Source:
    pattern = os.path.expanduser(rest)
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise CorpusError(f"source text:{rest}: no file matches {pattern!r}; check the path or glob")
    # the files' bytes are the revision: their sha256, in order (read once; cheap next to tokenizing)
    files = [{"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in paths]
    revision = hashlib.sha256(json.dumps([f["sha256"] for f in files]).encode()).hexdigest()
    record = {"kind": "files", "pattern": pattern, "text_column": req.text_column, "files": files,
              "revision": revision}

    def docs() -> Iterator[str]:
        for p in paths:
            yield from (_jsonl_docs(p, req.text_column) if _is_jsonl(p) else _txt_docs(p))

    return Source(req, record, docs)


SOURCES.register("hf", _hf)
SOURCES.register("text", _files)
