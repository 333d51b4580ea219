"""A sweep's folder, its plan and its result: everything about a sweep that needs no Ray.

:func:`plan_sweep` reads a grid spec and a sweep folder (never writes) and says what a run of the
sweep will do: the cells to train, the cells already complete (skipped), the cells taken from
``--reuse`` sources, the streams to build first and the Ray options of each task.
:class:`SweepResult` is what a finished run reports (and what the manifest keeps as ``last_run``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from runner._io import utcnow, write_json_atomic, write_text_atomic
from runner.grid import Cell, GridError, GridSpec, Resources, load_grid
from runner.store import group_complete


class Sweep:
    """A sweep folder: its spec, manifest and cells."""

    def __init__(self, sweep_dir: str | Path, spec: GridSpec | None = None) -> None:
        self.dir = Path(sweep_dir)
        if spec is None:
            spec = load_grid(self.dir / "grid.toml")
        self.spec = spec
        self.cells = spec.cells()

    @property
    def store_path(self) -> Path:
        return self.dir / "store.zarr"

    def manifest(self) -> dict:
        p = self.dir / "manifest.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def write_manifest(self, states: dict[str, dict], last_run: dict | None = None) -> None:
        """Write the manifest; ``last_run`` (wall time, efficiency ... of the latest finished
        ``run_sweep``) is kept from the previous manifest unless a new one is given."""
        data = {
            "name": self.spec.name, "spec": self.spec.model_dump(mode="json"), "updated_utc": utcnow("seconds"),
            "cells": [{"label": c.label, "run_id": c.run_id, "corpus": c.corpus, "budget": c.budget, "dose": c.dose,
                       "seed": c.seed, **states.get(c.run_id, {"state": "pending"})} for c in self.cells],
        }
        last_run = last_run or self.manifest().get("last_run")
        if last_run:
            data["last_run"] = last_run
        write_json_atomic(self.dir / "manifest.json", data)

    def is_complete(self, run_id: str) -> bool:
        return group_complete(self.store_path, f"runs/{run_id}")


def stream_key(cfg) -> str:
    """Cells with equal keys train on the same stream (corpus, dose, intervention families, seed and
    the edit's settings: classes, reference, matched, and the window when it receives the whole dose)."""
    iv = None
    if cfg.dose != "none":
        x = cfg.intervention
        iv = (list(cfg.dose_families), x.seed, list(x.classes), x.reference, x.matched,
              [x.start_step, x.end_step, cfg.train.steps] if x.whole_dose else None)
    return json.dumps([cfg.corpus.model_dump(mode="json"), cfg.dose, iv], sort_keys=True)


@dataclass(frozen=True)
class SweepPlan:
    """What a run of a sweep will do; every cell list is in the grid's expansion order."""

    sweep_dir: Path
    spec: GridSpec
    cells: tuple[Cell, ...]  # every cell of the grid
    to_run: tuple[Cell, ...]  # not complete here nor in a reuse source: trained (or resumed)
    skipped: tuple[Cell, ...]  # complete in this sweep already
    reused: dict[str, str] = field(default_factory=dict)  # run id -> source sweep holding it complete
    streams: tuple[Cell, ...] = ()  # the first cell of each distinct stream among to_run

    @property
    def resources(self) -> Resources:
        return self.spec.resources

    @property
    def multi_gpu(self) -> bool:
        """A cell with more than one GPU runs under Ray Train (one rank per GPU)."""
        return self.resources.num_gpus > 1

    @property
    def train_options(self) -> dict:
        """Ray options of a one-process cell's task."""
        r = self.resources
        return {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "resources": r.custom or None,
                "max_retries": r.max_retries, "retry_exceptions": False}

    @property
    def stream_options(self) -> dict:
        """Ray options of a stream-building task."""
        r = self.resources
        return {"num_cpus": r.num_cpus, "resources": r.custom or None, "max_retries": r.max_retries}


def _reusable(cell: Cell, sources: list[Path]) -> str | None:
    """The first source sweep holding ``cell`` complete (store group and run folder), if any."""
    for src in sources:
        src = Path(src)
        if group_complete(src / "store.zarr", f"runs/{cell.run_id}") and (src / "runs" / cell.run_id).is_dir():
            return str(src)
    return None


def _check_probes(cells) -> None:
    """Every cell's battery, checked once per (probes, corpus, context) before any cell starts."""
    from runner.train.loop import check_probes

    seen = set()
    for c in cells:
        key = (c.config.probes, c.config.corpus.is_world, c.config.model.n_ctx)
        if key not in seen:
            seen.add(key)
            try:
                check_probes(c.config)
            except ValueError as e:
                raise GridError(f"[probes]: {e}") from None


def plan_sweep(spec_file: str | Path, sweep_dir: str | Path, reuse: list[Path] | tuple = ()) -> SweepPlan:
    """Plan a run of the sweep without writing anything or starting Ray.

    Raises :class:`GridError` for a bad spec, or for a folder that holds another grid's sweep."""
    spec = load_grid(spec_file)
    d = Path(sweep_dir)
    existing = d / "grid.toml"
    if existing.exists() and load_grid(existing) != spec:
        raise GridError(f"{d} holds a sweep of a different grid spec; use another --out")
    for src in reuse:  # a typo must not silently recompute everything
        if not (Path(src) / "grid.toml").is_file():
            raise GridError(f"--reuse {src}: not a sweep folder (no grid.toml there); pass a folder `ungrok sweep` "
                            "wrote, e.g. runs/sweeps/<name>")
    cells = tuple(spec.cells())
    skipped = tuple(c for c in cells if group_complete(d / "store.zarr", f"runs/{c.run_id}"))
    done = {c.run_id for c in skipped}
    reused = {c.run_id: src for c in cells if c.run_id not in done
              for src in [_reusable(c, list(reuse))] if src}
    to_run = tuple(c for c in cells if c.run_id not in done and c.run_id not in reused)
    _check_probes(to_run)
    firsts: dict[str, Cell] = {}
    for c in to_run:
        firsts.setdefault(stream_key(c.config), c)
    return SweepPlan(sweep_dir=d, spec=spec, cells=cells, to_run=to_run, skipped=skipped, reused=reused,
                     streams=tuple(firsts.values()))


def prepare_sweep(spec_file: str | Path, sweep_dir: str | Path) -> Sweep:
    """Validate the spec, create the folder, the store's root groups and the manifest."""
    import zarr

    spec_file = Path(spec_file)
    spec = load_grid(spec_file)
    d = Path(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    existing = d / "grid.toml"
    if existing.exists() and load_grid(existing) != spec:
        raise GridError(f"{d} holds a sweep of a different grid spec; use another --out")
    if not existing.exists():
        write_text_atomic(existing, spec_file.read_text())
    root = zarr.open_group(str(d / "store.zarr"), mode="a", use_consolidated=False)
    root.require_group("runs")
    sw = Sweep(d, spec)
    old = {c["run_id"]: c for c in sw.manifest().get("cells", [])}
    sw.write_manifest({rid: {k: v for k, v in c.items() if k in ("state", "error", "node_id", "seconds")}
                       for rid, c in old.items()})
    return sw


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a folder by hard links where the filesystem allows (else plain copies), atomically:
    into a temporary sibling, then renamed into place."""
    import shutil

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    tmp = dest.with_name(f".{dest.name}.reuse-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def copy_reused(plan: SweepPlan, log=print) -> None:
    """Copy the plan's reused cells in: run folder, then store group (last, so a copy cut short is
    simply not complete)."""
    for c in plan.cells:
        src = plan.reused.get(c.run_id)
        if src:
            _copy_tree(Path(src) / "runs" / c.run_id, plan.sweep_dir / "runs" / c.run_id)
            _copy_tree(Path(src) / "store.zarr" / "runs" / c.run_id, plan.sweep_dir / "store.zarr" / "runs" / c.run_id)
            log(f"{c.label}: complete in {src}, reused")


def reuse_complete(sw: Sweep, sources: list[Path], log=print) -> dict[str, str]:
    """Take complete cells from other sweeps instead of recomputing them.

    A cell is taken when a source sweep holds a *complete* run with the same run id (the same
    resolved config, so the same numbers): its run folder and its store group are copied in.
    Returns ``{run_id: source}``."""
    plan = plan_sweep(sw.dir / "grid.toml", sw.dir, sources)
    copy_reused(plan, log)
    return dict(plan.reused)


@dataclass(frozen=True)
class SweepResult:
    """A finished run of a sweep. Cells are named by label, in the grid's expansion order."""

    sweep: str
    cells: int  # cells in the grid
    completed: tuple[str, ...]  # trained to completion by this run
    skipped: tuple[str, ...]  # complete before this run (reused ones included)
    reused: dict[str, str]  # label -> source sweep it was copied from
    failed: tuple[str, ...]  # the task raised, or its stream could not be built (tracebacks in the manifest)
    wall_seconds: float
    sum_run_seconds: float
    workers: int  # cells that could run at once
    efficiency: float | None  # sum_run_seconds / (workers x wall_seconds); None when nothing ran

    @property
    def ran(self) -> int:
        return len(self.completed)

    @classmethod
    def of(cls, plan: SweepPlan, results: dict[str, dict], errors: dict[str, str], wall: float,
           cluster_cpus: float) -> "SweepResult":
        """From the tasks' results and errors by run id."""
        busy = sum(round(r["seconds"], 2) for r in results.values())
        workers = int(min(max(1.0, cluster_cpus // plan.resources.num_cpus), max(len(results), 1)))
        skipped = {c.run_id for c in plan.skipped} | set(plan.reused)
        return cls(sweep=str(plan.sweep_dir), cells=len(plan.cells),
                   completed=tuple(c.label for c in plan.cells if c.run_id in results),
                   skipped=tuple(c.label for c in plan.cells if c.run_id in skipped),
                   reused={c.label: plan.reused[c.run_id] for c in plan.cells if c.run_id in plan.reused},
                   failed=tuple(c.label for c in plan.cells if c.run_id in errors),
                   wall_seconds=round(wall, 2), sum_run_seconds=round(busy, 2), workers=workers,
                   efficiency=round(busy / (workers * wall), 3) if results else None)

    def manifest_record(self) -> dict:
        """The manifest's ``last_run`` (without its time stamp)."""
        return {"sweep": self.sweep, "cells": self.cells, "ran": self.ran, "skipped": len(self.skipped),
                "failed": list(self.failed), "wall_seconds": self.wall_seconds,
                "sum_run_seconds": self.sum_run_seconds, "workers": self.workers, "efficiency": self.efficiency}
