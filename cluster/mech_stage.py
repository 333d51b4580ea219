"""Mechanistic stages (capture, localize, appendix) for one run or, on Ray, every complete run of a sweep.

Each run is one Ray task (the driver holds no weights); a task writes only its own run's
``mech/`` folder and its own capture group, so tasks never share a chunk.
"""

from __future__ import annotations

import time
from pathlib import Path


def _stage(stage: str, run_dir: str, kw: dict) -> dict:
    from mech.appendix import appendix_run
    from mech.capture import capture_run
    from mech.localize import localize_run

    t0 = time.time()
    if stage == "capture":
        res = capture_run(run_dir, **kw)
        return {"run": run_dir, "seconds": time.time() - t0, "families": sorted(res["families"])}
    if stage == "appendix":
        res = appendix_run(run_dir, **kw)
        return {"run": run_dir, "seconds": time.time() - t0, "json": res["json"], "png": res["png"]}
    res = localize_run(run_dir, **kw)
    return {"run": run_dir, "seconds": time.time() - t0, "json": res["json"], "html": res["html"]}


def complete_runs(path: str | Path) -> list[Path]:
    """A run folder, or the complete runs of a sweep / runs folder."""
    from runner.analysis.verdicts import find_runs
    from runner.store import is_run_dir, open_run_store

    path = Path(path)
    if is_run_dir(path):
        return [path]
    return [d for d in find_runs(path) if open_run_store(d).attrs.get("complete")]


def run_stage(stage: str, path: str | Path, *, address: str | None = None, num_cpus: int | None = None,
              log=print, **kw) -> list[dict]:
    """``stage`` (capture | localize | appendix) on one run in-process, or on every complete run of a sweep
    as Ray tasks (one per run); failures are reported per run, never swallowed."""
    runs = complete_runs(path)
    if len(runs) == 1:
        return [_stage(stage, str(runs[0]), kw)]
    import ray

    from cluster.sweep import init_ray

    started = not ray.is_initialized()
    if started:
        init_ray(address, num_cpus)
    try:
        task = ray.remote(_stage).options(num_cpus=1, max_retries=1)
        refs = {task.remote(stage, str(d), kw): d for d in runs}
        out = []
        for ref, d in refs.items():
            try:
                out.append(ray.get(ref))
                log(f"{stage} {d.name}: done in {out[-1]['seconds']:.0f} s")
            except Exception as e:
                cause = getattr(e, "cause", None) or e
                out.append({"run": str(d), "error": f"{type(cause).__name__}: {cause}"})
                log(f"[red]{stage} {d.name} failed[/]: {cause}")
        return out
    finally:
        if started:
            ray.shutdown()
