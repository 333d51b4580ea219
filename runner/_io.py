"""Leaf helpers: atomic file writes, UTC time stamps, TOML files read into pydantic models (the
one copy of each)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")


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


def field_error(e: "ValidationError", hint=None) -> str:
    """``loc.of.field: message`` for a pydantic error (the first one); ``hint(loc)`` may replace
    the message of an unknown-field error with what is allowed there."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and hint is not None:
        msg = f"unknown field; allowed here: {hint(err['loc'])}"
    return f"{loc}: {msg}" if loc else msg


def load_toml_model(path, model: type[M], error: type[Exception], what: str, hint=None) -> M:
    """Read a TOML file into ``model``; every failure is one ``error`` naming the file and field."""
    import tomllib

    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML ({e})") from None
    try:
        return model(**data)
    except ValidationError as e:
        raise error(f"{path}: {field_error(e, hint)}") from None
