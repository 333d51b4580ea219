"""A run's folder (:class:`RunDir`, which names every path in it) and its zarr v3 store
(:class:`RunStore`: per-item log-probs and aggregates at every scored checkpoint).

Layout of a run group (the root of ``<run>/store.zarr``, or ``runs/<run_id>`` inside a sweep's
store); every array carries ``dimension_names`` so ``xarray.open_zarr(path, group=...)`` names
its dims::

    train/step (step,)  train/loss (step,)  train/lr (step,)
    <family>/step (step,)                 the coordinate along 'step'
    <family>/item (item,)                 item ids, the coordinate along 'item'
    <family>/condition|split|template_id  (item,) strings
    <family>/logp_correct|logp_distractor (step, item)   log p(continuation), summed over its tokens
    <family>/n_tokens_correct|n_tokens_distractor|unknown (item,)   continuation lengths, unknown token
    <family>/acc_<condition>_<split>, lnd_<condition>_<split>, cm, pm (step,)
    rescore/<battery>/...   a battery scored after training (``ungrok rescore``), the same layout

Attributes: ``battery`` (name, path, sha256), ``bos``/``bos_id`` (the start token prepended when
scoring), ``tokens`` (items holding unknown tokens), ``families``, ``n_complete``.

Atomicity: rows are appended (resize + write, one chunk per checkpoint, a row's arrays in one
round trip: :mod:`runner.store_write`), then ``n_complete`` is advanced. Readers use the first
``n_complete`` rows; a killed append leaves a tail ignored and truncated on resume. ``complete``
is set when the run finishes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, cast

import numpy as np
import zarr

from runner._io import dense_chunks, missing_chunks, read_json
from runner._io import utcnow as _utcnow
from runner.store_write import append_rows
from runner.world.batteries import ProbeItem

RESCORE = "rescore"  # the group holding a run's rescored batteries
RESERVED_GROUPS = frozenset({"train", RESCORE, "mech"})  # groups of a run that are not families
_VIEW: ContextVar[str | None] = ContextVar("ungrok_battery_view", default=None)


@contextmanager
def battery_view(name: str | None):
    """Within the block every :class:`RunDir` reads and summarises the scores of battery ``name``
    (``rescore/<name>``, or the training-time group for the battery the run trained with; None: the
    training-time group): what ``show``, ``verdict`` and ``report --battery NAME`` run inside."""
    token = _VIEW.set(name)
    try:
        yield
    finally:
        _VIEW.reset(token)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


class RunDir:
    """The layout of one run folder; every path of a run is named here and nowhere else::

        <run>/config.json                   the RunConfig
        <run>/run.json                      what was trained on (corpus, sizes, world, store location)
        <run>/tokenizer.json                the corpus tokenizer
        <run>/weights/step_<t:07d>.safetensors  model weights at every scored step t
        <run>/checkpoints/                  DeepSpeed resume state (the last few tags)
        <run>/store.zarr                    the scores (or a group ``runs/<run_id>`` of a sweep's store)
        <run>/summary.json, trajectory.png  figures and plot
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def meta(self) -> Path:
        return self.path / "run.json"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def weights_dir(self) -> Path:
        return self.path / "weights"

    def weights(self, step: int) -> Path:
        """The safetensors file of the weights after ``step`` updates."""
        return self.weights_dir / f"step_{step:07d}.safetensors"

    def weight_files(self) -> list[Path]:
        """Every saved weights file, in step order."""
        return sorted(self.weights_dir.glob("step_*.safetensors"))

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def rescore_dir(self, name: str) -> Path:
        """Files of battery ``name``'s rescore (summary, plot): ``<run>/rescore/<name>/``."""
        return self.path / RESCORE / name

    def _view_dir(self) -> Path:
        name = _VIEW.get()
        return self.rescore_dir(name) if name and self._view_group(name) != self.training_location()[1] else self.path

    @property
    def summary(self) -> Path:
        return self._view_dir() / "summary.json"

    @property
    def trajectory_png(self) -> Path:
        return self._view_dir() / "trajectory.png"

    def is_run(self) -> bool:
        return self.meta.exists() and self.config.exists()

    # ---- the store ---------------------------------------------------------------------------
    def planned_store(self, store_root: str | Path | None = None) -> tuple[Path, str]:
        """Where a run being trained writes its scores: group ``runs/<run_id>`` of a sweep's
        shared store at ``store_root``, else the root of ``<run>/store.zarr``. Pure (reads no
        file), so every rank of a job agrees before ``run.json`` exists."""
        if store_root is not None:
            return Path(store_root).resolve(), f"runs/{self.name}"
        return self.path / "store.zarr", ""

    def store_record(self, store_root: str | Path | None = None) -> dict:
        """``run.json``'s ``store`` entry for :meth:`planned_store` (path relative to the run)."""
        path, group = self.planned_store(store_root)
        return {"path": os.path.relpath(path, self.path.resolve() if store_root is not None else self.path),
                "group": group}

    def training_location(self) -> tuple[Path, str]:
        """Where the run's training-time scores live: ``run.json``'s ``store`` entry (a sweep's
        shared store), else ``<run>/store.zarr`` at its root."""
        if self.meta.exists():
            loc = read_json(self.meta).get("store")
            if loc:
                return (self.path / loc["path"]).resolve(), loc["group"]
        return self.path / "store.zarr", ""

    def rescore_location(self, name: str) -> tuple[Path, str]:
        """Where battery ``name``'s rescore lives: group ``rescore/<name>`` under the run's group."""
        path, group = self.training_location()
        return path, _join(group, RESCORE, name)

    def _view_group(self, name: str) -> str:
        """The group of battery ``name``: its rescore group if written, else the training-time one
        when the run was trained with that battery, else the (missing) rescore group."""
        path, group = self.training_location()
        rescored = _join(group, RESCORE, name)
        if (path / rescored / "zarr.json").exists() or not (path / group / "zarr.json").exists():
            return rescored
        battery = cast(Any, self.training_store_attrs().get("battery")) or {}
        return group if battery.get("name") == name else rescored

    def training_store_attrs(self) -> dict:
        """The training-time group's attributes, read-only; FileNotFoundError before it exists."""
        path, group = self.training_location()
        if not (path / group / "zarr.json").exists():
            raise FileNotFoundError(f"{self.path}: no scores yet (expected a zarr group at {path}/{group})")
        root = zarr.open_group(str(path), mode="r", use_consolidated=False)
        return dict((root[group] if group else root).attrs)

    def rescored(self) -> list[str]:
        """Names of the batteries rescored on this run (its ``rescore/`` groups)."""
        path, group = self.training_location()
        folder = path / _join(group, RESCORE)
        return sorted(p.name for p in folder.iterdir() if (p / "zarr.json").exists()) if folder.is_dir() else []

    def store_location(self) -> tuple[Path, str]:
        """Where the run's scores are read: the training-time group, or inside
        :func:`battery_view` the group of that battery."""
        path, group = self.training_location()
        name = _VIEW.get()
        return (path, self._view_group(name)) if name else (path, group)

    def open_store(self) -> "RunStore":
        """The run's :class:`RunStore`; FileNotFoundError before the first score is written."""
        path, group = self.store_location()
        if not (path / group / "zarr.json").exists():
            name = _VIEW.get()
            if name:
                have = ", ".join(self.rescored()) or "none"
                raise FileNotFoundError(f"{self.path}: no scores of battery {name!r} (expected a zarr group at "
                                        f"{path}/{group}; rescored here: {have}); score it with: ungrok rescore "
                                        f"{self.path} --battery {name}.jsonl")
            raise FileNotFoundError(f"{self.path}: no scores yet (expected a zarr group at {path}/{group})")
        return RunStore(path, group)


def store_location(run_dir: str | Path) -> tuple[Path, str]:
    """``RunDir(run_dir).store_location()``."""
    return RunDir(run_dir).store_location()


def is_run_dir(path: str | Path) -> bool:
    """``RunDir(path).is_run()``."""
    return RunDir(path).is_run()


def open_run_store(run_dir: str | Path) -> "RunStore":
    """``RunDir(run_dir).open_store()``."""
    return RunDir(run_dir).open_store()


def group_complete(path: Path, group: str = "") -> bool:
    """True when the group exists and carries ``complete``; opens read-only (safe on any rank)."""
    if not (path / group / "zarr.json").exists():
        return False
    g = zarr.open_group(str(path), mode="r", use_consolidated=False)
    return bool((g[group] if group else g).attrs.get("complete"))


class StoreDamaged(RuntimeError):
    """A run's scores cannot be read as written: a chunk is missing or corrupt (never read as zeros)."""


class RunStore:
    def __init__(self, path: str | Path, group: str = "") -> None:
        self.path = Path(path)
        self.group_path = group
        root = zarr.open_group(str(self.path), mode="a", use_consolidated=False)
        self.g = root.require_group(group) if group else root
        self._rows: list[tuple[str, zarr.Array]] | None = None  # see _row_arrays

    # ---- layout ------------------------------------------------------------------------------
    @dense_chunks
    def init_layout(self, items: list[ProbeItem], metric_names: list[str], attrs: dict,
                    item_columns: dict[str, np.ndarray] | None = None) -> None:
        """Create arrays once (idempotent); ``metric_names`` are ``<family>/<metric>`` keys;
        ``item_columns``: more per-item arrays (aligned with ``items``), e.g. token counts."""
        if self.g.attrs.get("layout_ready"):
            return
        self._rows = None
        tg = self.g.require_group("train")
        for name in ("step", "loss", "lr"):
            dt = "i8" if name == "step" else "f4"
            tg.create_array(name, shape=(0,), chunks=(1024,), dtype=dt, dimension_names=["step"], overwrite=True)
        fams = list(dict.fromkeys(it.family for it in items))  # battery order
        for fam in fams:
            fi = [it for it in items if it.family == fam]
            fg = self.g.require_group(fam)
            fg.create_array("step", shape=(0,), chunks=(1024,), dtype="i8", dimension_names=["step"], overwrite=True)
            for col in ("item", "condition", "split", "template_id"):
                a = fg.create_array(col, shape=(len(fi),), dtype=str, dimension_names=["item"], overwrite=True)
                a[:] = np.array([it.item_id if col == "item" else getattr(it, col) for it in fi])
            mask = np.array([it.family == fam for it in items])
            for col, values in (item_columns or {}).items():
                v = np.asarray(values)[mask]
                fg.create_array(col, shape=v.shape, dtype=v.dtype, dimension_names=["item"], overwrite=True)[:] = v
            for name in ("logp_correct", "logp_distractor"):
                fg.create_array(name, shape=(0, len(fi)), chunks=(1, len(fi)), dtype="f4",
                                dimension_names=["step", "item"], overwrite=True)
            for key in metric_names:
                f, metric = key.split("/", 1)
                if f == fam:
                    fg.create_array(metric, shape=(0,), chunks=(1024,), dtype="f4", dimension_names=["step"],
                                    overwrite=True)
        self.g.attrs.update({**attrs, "families": fams, "n_complete": 0, "complete": False,
                             "layout_ready": True, "dense_chunks": True})

    # ---- typed access (zarr's own annotations are unions over arrays, groups and scalars) -----
    def array(self, key: str) -> zarr.Array:
        """The array at ``key`` (``train/loss``, ``<family>/cm`` ...); a clear error if it is a group."""
        a = self.g[key]
        if not isinstance(a, zarr.Array):
            raise KeyError(f"{key!r} in {self.path} is a group, not an array")
        return a

    def group(self, key: str) -> zarr.Group:
        a = self.g[key]
        if not isinstance(a, zarr.Group):
            raise KeyError(f"{key!r} in {self.path} is an array, not a group")
        return a

    def attr(self, key: str, default: Any = None) -> Any:
        return cast(Any, self.g.attrs.get(key, default))

    def item_labels(self, family: str, field: str) -> np.ndarray:
        """Per-item strings of ``family`` (``condition``, ``split``, ``template_id``, ``item``)."""
        return self.read(f"{family}/{field}")

    @staticmethod
    def _is_step_series(arr: zarr.Array) -> bool:
        dims = getattr(arr.metadata, "dimension_names", None)
        return bool(dims) and dims[0] == "step"

    # ---- writing -----------------------------------------------------------------------------
    @property
    def n_complete(self) -> int:
        return int(self.attr("n_complete", 0))

    def _row_arrays(self) -> list[tuple[str, zarr.Array]]:
        """The step-series arrays a row goes to, keyed ``<group>/<name>`` (listed once per object)."""
        if self._rows is None:
            self._rows = list(self._step_arrays())
        return self._rows

    @dense_chunks
    def append(self, step: int, loss: float, lr: float, items: list[ProbeItem], lp_correct: np.ndarray,
               lp_distractor: np.ndarray, metrics: dict[str, float]) -> None:
        """Append one checkpoint's row everywhere (:func:`runner.store_write.append_rows`: one
        round trip), then advance the completion marker."""
        n = self.n_complete
        last = self.steps()[-1] if n else None
        if last is not None and int(last) >= step:
            raise ValueError(f"step {step} is not after the last stored step {int(last)}")
        fam_arr = np.array([it.family for it in items])
        values: dict[str, Any] = {"train/step": step, "train/loss": loss, "train/lr": lr}
        for fam in self.families():
            m = fam_arr == fam
            values.update({f"{fam}/step": step, f"{fam}/logp_correct": lp_correct[m],
                           f"{fam}/logp_distractor": lp_distractor[m]})
        rows = [(arr, values[k] if k in values else metrics.get(k, np.nan)) for k, arr in self._row_arrays()]
        append_rows(rows, n)
        if "first_scored_utc" not in self.g.attrs:
            self.g.attrs["first_scored_utc"] = _utcnow()
        self.g.attrs["n_complete"] = n + 1

    def truncate(self, last_step: int) -> None:
        """Drop every row after ``last_step`` (resume from a checkpoint at that step)."""
        steps = self.steps()
        keep = int((steps <= last_step).sum())
        self._rows = None
        for _, arr in self._step_arrays():
            arr.resize((keep, *arr.shape[1:]))
        self.g.attrs.update({"n_complete": keep, "complete": False})

    def _step_arrays(self) -> Iterator[tuple[str, zarr.Array]]:
        for gname in ["train", *self.families()]:
            for name, arr in self.group(gname).arrays():
                if self._is_step_series(arr):
                    yield f"{gname}/{name}", arr

    def set_attr(self, key: str, value) -> None:
        self.g.attrs[key] = value

    def add_event(self, event: dict) -> None:
        """Append an event (e.g. a monitor warning) to the group's ``events`` attribute."""
        self.g.attrs["events"] = [*self.attr("events", []), event]

    def mark_complete(self, **extra) -> None:
        self.g.attrs.update({"complete": True, "completed_utc": _utcnow(), **extra})

    # ---- reading -----------------------------------------------------------------------------
    def steps(self) -> np.ndarray:
        return self.read("train/step", self.n_complete)

    def series(self, key: str) -> np.ndarray:
        """``train/loss``, ``<family>/cm``, ``<family>/logp_correct`` ... (complete rows only)."""
        return self.read(key, self.n_complete)

    def read(self, key: str, rows: int | None = None) -> np.ndarray:
        """The first ``rows`` rows of array ``key`` (all of it: None), checked: a chunk that is
        missing (a store laid out with ``dense_chunks`` writes every chunk) or fails to decode
        raises :class:`StoreDamaged` naming the run and the array; never zarr's fill value."""
        arr = self.array(key)
        if self.attr("dense_chunks"):
            missing = missing_chunks(self.path / self.group_path / key, arr, rows)
            if missing:
                raise StoreDamaged(self._damage(key, f"chunk {missing[0]} is missing ({len(missing)} of the "
                                                     "chunks read): deleted or lost in a copy"))
        try:
            return np.asarray(arr[:rows] if rows is not None else arr[:])
        except Exception as e:  # a truncated or corrupt chunk fails to decode
            raise StoreDamaged(self._damage(key, f"a chunk cannot be decoded ({type(e).__name__}: {e})")) from None

    def _damage(self, key: str, what: str) -> str:
        run = self.attr("run_id") or self.group_path or self.path.name
        return (f"run {run}: array {key} of the store {self.path}{'/' + self.group_path if self.group_path else ''}: "
                f"{what}; restore the store from a copy, or retrain the run into a new folder")

    def families(self) -> list[str]:
        return list(self.attr("families", []))

    def metrics(self, family: str) -> list[str]:
        return sorted(n for n, a in self.group(family).arrays()
                      if a.ndim == 1 and self._is_step_series(a) and n != "step")

    @property
    def attrs(self) -> dict:
        return dict(self.g.attrs)
