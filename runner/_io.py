"""Leaf helpers: atomic file writes, UTC time stamps, TOML files read into pydantic models (the
one copy of each)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")


def file_sha256(path: str | Path, h=None) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks; with ``h`` (a ``hashlib`` object) the bytes
    are added to it instead and its digest so far returned."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def utcnow(timespec: str = "microseconds") -> str:
    """The current UTC time as ISO 8601 with its offset, e.g. ``2026-01-02T03:04:05.678901+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


def umask() -> int:
    """This process's umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> Path:
    """Give a file (0666) or folder (0777) made by ``tempfile`` (0600 / 0700) the mode a plain
    ``open``/``mkdir`` would have: what the umask allows."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())
    return path


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with the umask's mode (see :func:`honour_umask`), named
    ``<prefix><pid>@<host>~<random>``. Folders of this prefix left by a dead process of this
    host (a build killed by SIGKILL) are removed first; another host's are left alone."""
    import glob
    import shutil
    import socket

    parent, host = Path(parent), socket.gethostname()
    for old in parent.glob(f"{glob.escape(prefix)}*@*~*") if parent.is_dir() else ():
        pid, _, rest = old.name[len(prefix):].partition("@")
        if pid.isdigit() and rest.rpartition("~")[0] == host and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return honour_umask(tempfile.mkdtemp(dir=parent, prefix=f"{prefix}{os.getpid()}@{host}~"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same folder and suffix) to write to by any means
    (``savefig``, ``np.savez``, ``save_file``...); renamed onto ``path`` when the block ends, removed
    if it raises. A reader sees the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    honour_umask(tmp)  # mkstemp makes 0600: colleagues on a shared filesystem could not read it
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


def read_json(path: str | Path):
    """A JSON file's content; a damaged file (empty, cut short, edited) is a ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}): the file is damaged (cut short?); "
                         "restore it, or move its run out of the folder") from None


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


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock (:func:`hold_folder`); the message names its pid."""


@contextmanager
def hold_folder(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold ``<folder>/.lock`` (an exclusive ``flock``) for the block; :class:`FolderBusy`, naming
    the holder's pid, host and start time, when another process holds it. The kernel releases it
    when the holder dies, even by SIGKILL, so a stale lock never blocks a rerun. The file stays
    (removing it would race a waiting process) and records the last holder, unless the block
    created the folder and left nothing else in it (then both go). Under a launcher (``RANK`` set)
    only rank 0 takes it: the job is one holder."""
    import fcntl
    import socket

    folder = Path(folder)
    if os.environ.get("RANK", "0") != "0":  # a launcher's other ranks: rank 0 holds it for the job
        yield folder
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").split()
            who = f"pid {holder[0]} on {holder[1]} since {holder[2]}" if len(holder) >= 3 else "another process"
            raise FolderBusy(f"{what} {folder} is in use by {who}; wait for it to finish or stop it, then "
                             "rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {utcnow('seconds')}\n".encode(), 0)
        yield folder
    finally:
        if created and [p.name for p in folder.iterdir()] == [".lock"]:  # nothing was made: no trace left
            lock.unlink(missing_ok=True)
            folder.rmdir()
        os.close(fd)  # releases the lock


def dense_chunks(method):
    """Decorator: zarr writes every chunk inside the call, even one holding only the fill value
    (skipped by default), so that a chunk missing on disk always means damage (see
    :func:`missing_chunks`)."""
    import functools

    import zarr

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with zarr.config.set({"array.write_empty_chunks": True}):
            return method(*args, **kwargs)

    return wrapped


def missing_chunks(folder: Path, arr, rows: int | None = None) -> list[str]:
    """Keys of the chunks of ``arr`` (stored at ``folder``) holding its first ``rows`` rows (all:
    None) that are not on disk."""
    import itertools
    import math

    shape = list(arr.shape)
    if rows is not None and shape:
        shape[0] = min(rows, shape[0])
    grid = [range(math.ceil(n / c)) for n, c in zip(shape, arr.chunks)]
    keys = (arr.metadata.encode_chunk_key(tuple(ix)) for ix in itertools.product(*grid))
    return [k for k in keys if not (folder / k).exists()]
