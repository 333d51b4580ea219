"""Leaf helpers: atomic file writes and UTC time stamps (the one copy of each)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def utcnow(timespec: str = "microseconds") -> str:
    """The current UTC time as ISO 8601 with its offset, e.g. ``2026-01-02T03:04:05.678901+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same folder and suffix) to write to by any means
    (``savefig``, ``np.savez``, ``save_file``...); renamed onto ``path`` when the block ends, removed
    if it raises. A reader sees the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj, default=None) -> Path:
    """``obj`` as indented JSON, written atomically (see :func:`write_text_atomic`). ``default``:
    as in :func:`json.dumps`, for values JSON lacks (e.g. ``str`` or ``float``)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=default))
