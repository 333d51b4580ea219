"""``ungrok rescore`` for many runs: any battery on every finished run of a sweep or runs
folder, one Ray task per run (a single run is scored in-process).

The driver checks everything before any task starts (:func:`runner.train.rescore.plan_rescore`
for every run: the battery reads, its name and family names are usable, the run is finished and
its tokenizer knows enough of the battery) and writes nothing until all pass. Each task scores
one run's checkpoints into its own group (``runs/<id>/rescore/<name>`` of a sweep's shared store:
tasks never share a chunk). A failed task is reported per run, never swallowed; rerunning resumes
every run at its next unscored checkpoint. A sweep store's consolidated metadata is rebuilt once
every task has finished.
"""

from __future__ import annotations

import time
from pathlib import Path


def _rescore_task(run_dir: str, battery: str, name: str | None, max_unknown: float) -> dict:
    """The Ray task body: rescore one run."""
    import os

    from runner.train.rescore import rescore_run

    res = rescore_run(run_dir, battery, name=name, max_unknown=max_unknown, log=lambda *_: None)
    return {**res, "pid": os.getpid()}


def finished_runs(path: str | Path) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) runs of a run folder, a runs folder or a sweep."""
    from runner.analysis.verdicts import find_runs
    from runner.store import RunDir, group_complete

    runs = find_runs(path)
    done = [d for d in runs if group_complete(*RunDir(d).training_location())]
    return done, [d for d in runs if d not in done]


def rescore_runs(path: str | Path, battery: str | Path, *, name: str | None = None, max_unknown: float = 0.5,
                 address: str | None = None, num_cpus: int | None = None, log=print) -> dict:
    """Rescore every finished run under ``path`` with ``battery``; returns per-run results, the
    runs that failed (with their error) and those left out because they have not finished."""
    from runner.train.rescore import RescoreError, plan_rescore

    done, unfinished = finished_runs(path)
    if not done:
        raise RescoreError(f"{path}: no finished run to rescore ({len(unfinished)} unfinished)")
    battery = str(Path(battery).resolve())
    for d in done:  # every check before anything is written
        plan_rescore(d, battery, name, max_unknown)
    t0 = time.time()
    if len(done) == 1:
        results, failed = [_rescore_task(str(done[0]), battery, name, max_unknown)], []
    else:
        results, failed = _on_ray(done, battery, name, max_unknown, address, num_cpus, log)
    sweep = Path(path)
    if (sweep / "grid.toml").exists() and (sweep / "store.zarr").exists():
        from cluster.sweep import _consolidate

        _consolidate(sweep / "store.zarr")  # every writer has finished
    return {"runs": results, "failed": failed, "unfinished": [str(d) for d in unfinished],
            "wall_seconds": round(time.time() - t0, 2)}


def _on_ray(runs: list[Path], battery: str, name: str | None, max_unknown: float, address: str | None,
            num_cpus: int | None, log) -> tuple[list[dict], list[str]]:
    """One Ray task per run; (results, failures as ``run: error``)."""
    import ray

    from cluster.sweep import init_ray

    started = not ray.is_initialized()
    if started:
        init_ray(address, num_cpus)
    results, failed = [], []
    try:
        task = ray.remote(_rescore_task).options(num_cpus=1, max_retries=1)
        refs = {task.remote(str(d), battery, name, max_unknown): d for d in runs}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            d = refs[ready[0]]
            try:
                r = ray.get(ready[0])
                results.append(r)
                log(f"rescore {d.name}: scored {r['scored']}, already scored {r['skipped']}")
            except Exception as e:
                cause = getattr(e, "cause", None) or e
                failed.append(f"{d.name}: {type(cause).__name__}: {cause}")
                log(f"[red]rescore {d.name} failed[/]: {cause}")
    finally:
        if started:
            ray.shutdown()
    return results, failed
