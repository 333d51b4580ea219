"""How a capture reaches disk: the codec of its arrays, the background writer, progress lines.

Codec (:data:`CODECS`, default :data:`DEFAULT_CODEC`), chosen by measurement
(``bench/zarr_write.py``; float16 rows, one checkpoint per chunk, on a shared 2-core machine):
no compression wrote at ~0.5x ``numpy.save`` and stores what numpy stores; zarr's own default
(zstd level 0) and Blosc LZ4 + byte shuffle wrote at ~0.3x and saved 8-20% of the bytes (on a
real capture of the default run: 45 MB with LZ4 + shuffle, 43 MB with zstd, 56 MB without): the
mantissa bytes of activations are noise, so a compressor buys little space for its time. The
default is therefore ``none``; ``lz4`` and ``zstd`` stay available. Every codec is lossless, so
the stored values are the same whichever is chosen. Rows are written without zarr's scan for
all-fill-value chunks (:data:`WRITE_CONFIG`: 2x the throughput).

Writer (:class:`BackgroundWriter`). The forward of the next checkpoint runs while the previous
one's rows are converted, compressed and written: one thread takes jobs from a bounded queue
(at most ``maxsize`` checkpoints' rows wait in memory) and runs them in order. After a job fails
it runs no other (a later row must not be counted complete past a missing one); the error is
raised in the caller at its next :meth:`~BackgroundWriter.submit` or at
:meth:`~BackgroundWriter.close`, which drains the queue and joins the thread (also when the
caller itself failed or was interrupted: rows already submitted are finished, so a resumed capture
starts after them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from runner._progress import Ticker, plain_progress

from . import names as N
from .positions import cue_class
from .probes import ProbeTensors

F16_MAX = 65504.0

#: ``create_array`` keyword arguments per codec name
CODECS: dict[str, dict[str, Any]] = {
    "none": {"compressors": None},
    "lz4": {"compressors": (BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),)},
    "zstd": {"compressors": (ZstdCodec(level=0),)},  # zarr 3's own default
}
DEFAULT_CODEC = "none"
#: zarr settings while a checkpoint's rows are written: every chunk is written as is (by default
#: zarr first scans each chunk to skip one holding only the fill value: a full extra pass over
#: the rows that halved the write throughput, and a capture's rows are never all fill value)
WRITE_CONFIG = {"array.write_empty_chunks": True}


def codec_args(name: str) -> dict[str, Any]:
    """The ``create_array`` arguments of codec ``name``; a clear error for an unknown one."""
    if name not in CODECS:
        raise ValueError(f"codec: {name!r} is not one of {sorted(CODECS)}; pass one of those")
    return CODECS[name]


class BackgroundWriter:
    """Runs submitted jobs in order on one thread (see the module docstring)."""

    def __init__(self, maxsize: int = 2, name: str = "ungrok-capture-writer") -> None:
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # re-raised in the caller's thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (blocks while the queue is full); raises an earlier job's error."""
        self._raise()
        self._q.put(functools.partial(fn, *args))

    def close(self, reraise: bool = True) -> None:
        """Finish the queued jobs, join the thread, then raise a job's error (if ``reraise``)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if reraise:
            self._raise()


class CheckpointProgress:
    """Progress of a loop over checkpoints, as training shows it (:mod:`runner._progress`): plain
    lines (a :class:`~runner._progress.Ticker`) when stdout is not a terminal or
    ``UNGROK_PROGRESS=plain``, else a rich bar; nothing when ``enabled`` is False."""

    def __init__(self, name: str, total: int, enabled: bool = True) -> None:
        self.ticker: Ticker | None = None
        self.bar: Any = None
        if enabled and plain_progress():
            self.ticker = Ticker(name, total, unit="checkpoints")
            self.ticker.update(0, "started", force=True)
        elif enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.bar.start()
            self.task = self.bar.add_task(name, total=total, info="")

    def update(self, done: int, info: str = "") -> None:
        if self.ticker is not None:
            if done == self.ticker.total:
                self.ticker.done_line(done, info)
            else:
                self.ticker.update(done, info)
        elif self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


# ---- the staging group ----------------------------------------------------------------------
def _plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def _to_storage(kind: str, x: np.ndarray) -> np.ndarray:
    if kind in N.FLOAT32_KINDS:
        return x.astype(np.float32)
    if np.abs(x).max(initial=0.0) >= F16_MAX:
        raise OverflowError(f"{N.hook_name(kind)} exceeds the float16 range; capture with dtype='float32'")
    return x.astype(np.float16)


class _Staging:
    """One family's staging group: preallocated arrays, a completion counter, then publish."""

    def __init__(self, root: Path, plan: dict, probes: ProbeTensors, shapes: dict[str, tuple[int, ...]],
                 dtype: str, chunk_bytes: int, codec: str = DEFAULT_CODEC) -> None:
        self.root, self.plan = root, plan
        h = _plan_hash(plan)
        g = None
        if (root / "zarr.json").exists():
            g = zarr.open_group(str(root), mode="a")
            if g.attrs.get("plan_hash") != h:
                g = None
        if g is None:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            g = zarr.open_group(str(root), mode="w")
            self._layout(g, probes, shapes, dtype, chunk_bytes, codec)
            g.attrs.update({"plan_hash": h, "plan": plan, "n_complete": 0, "complete": False, "codec": codec})
        self.g: Any = g  # zarr.Group (zarr's stubs type item access as Array | Group)

    @staticmethod
    def _layout(g, probes: ProbeTensors, shapes, dtype: str, chunk_bytes: int, codec: str) -> None:
        for kind, shape in shapes.items():
            n_item = probes.n
            dt = "f4" if (kind in N.FLOAT32_KINDS or dtype == "float32") else "f2"
            row = int(np.prod(shape)) * (4 if dt == "f4" else 2)
            ic = max(1, min(n_item, chunk_bytes // max(row, 1)))
            g.create_array(N.hook_name(kind), shape=(0, n_item, *shape), chunks=(1, ic, *shape), dtype=dt,
                           dimension_names=list(N.dims(kind)), fill_value=np.nan, **codec_args(codec))
        coords = {"item": np.array([it.item_id for it in probes.items]),
                  "condition": np.array([it.condition for it in probes.items]),
                  "split": np.array([it.split for it in probes.items]),
                  "template_id": np.array([it.template_id for it in probes.items]),
                  "cue_class": np.array([cue_class(it) or "" for it in probes.items])}
        for name, val in coords.items():
            a = g.create_array(name, shape=val.shape, dtype=str, dimension_names=["item"])
            a[:] = val
        for name in ("pred_pos", "cue_pos", "evidence_pos"):
            val = getattr(probes, name).numpy().astype("i8")
            a = g.create_array(name, shape=val.shape, dtype="i8", dimension_names=["item"])
            a[:] = val

    def set_axes(self, steps: list[int], shapes: dict[str, tuple[int, ...]], n_layers: int, n_heads: int,
                 key_len: int) -> None:
        g = self.g
        axes = {"step": np.array(steps, dtype="i8"), "layer": np.arange(n_layers, dtype="i8"),
                "head": np.arange(n_heads, dtype="i8"), "key_pos": np.arange(key_len, dtype="i8")}
        for name, val in axes.items():
            if name not in g:
                a = g.create_array(name, shape=val.shape, dtype="i8", dimension_names=[name])
                a[:] = val
        if "answer" not in g and "unembed" in shapes:
            a = g.create_array("answer", shape=(2,), dtype=str, dimension_names=["answer"])
            a[:] = np.array(["correct", "distractor"])
        for kind in shapes:
            arr = g[N.hook_name(kind)]
            if arr.shape[0] != len(steps):
                arr.resize((len(steps), *arr.shape[1:]))

    @property
    def n_complete(self) -> int:
        return int(self.g.attrs.get("n_complete", 0))

    def write(self, i: int, rows: dict[str, np.ndarray]) -> None:
        """Checkpoint ``i``'s rows (float16 kinds overflow-checked), then the completion counter."""
        with zarr.config.set(WRITE_CONFIG):  # read by the arrays opened here
            for kind, x in rows.items():
                arr = self.g[N.hook_name(kind)]
                arr[i] = _to_storage(kind, x) if arr.dtype == np.float16 else x.astype(np.float32)
        self.g.attrs["n_complete"] = i + 1

    def publish(self, dest_store: Path, dest_group: str, extra_attrs: dict) -> None:
        self.g.attrs.update({**extra_attrs, "complete": True,
                             "completed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        parent = dest_group.rsplit("/", 1)[0]
        zarr.open_group(str(dest_store), mode="a", use_consolidated=False).require_group(parent)
        dest = dest_store / dest_group
        old = None
        if dest.exists():
            old = self.root.parent / f".old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
        os.rename(self.root, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        try:  # tidy the staging folders if empty
            self.root.parent.rmdir()
            self.root.parent.parent.rmdir()
        except OSError:
            pass
