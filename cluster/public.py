"""``ungrok public``: score a public checkpoint suite on Ray, one task per (model, revision).

Tasks write their per-revision results beside each other (``<out>/<model>/revisions/``); the
driver holds no weights, only waits, then assembles each model's run folder in step order, so
``ungrok verdict`` / ``report`` on ``<out>`` give the same tables as for trained runs plus the
cross-model view. Rerunning skips revisions already scored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mech.public import (
    PublicError,
    Source,
    assemble_run,
    parse_revisions,
    score_revision,
    scored_with,
)
from runner.world.batteries import read_battery


def run_public(models: list[str], revisions: str, source: str, battery: str | Path, out: str | Path, *,
               address: str | None = None, num_cpus: int | None = None, cpus_per_task: float = 1,
               families: list[str] | None = None, batch_size: int = 64, progress: bool = True, log=print,
               bos: bool = False, max_unknown: float = 1.0) -> dict:
    """Validate everything, score every (model, revision) not yet scored (with this start-token
    setting: ``bos`` prepends the tokenizer's, off by default), assemble the runs. ``revisions``
    ``all``: every checkpoint a ``run:`` or ``local:`` source holds."""
    import ray

    from cluster.sweep import init_ray

    revs_of = _check(models, revisions, source, battery, families)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(m, r) for m in models for r in revs_of[m]
            if not scored_with(out / m / "revisions" / f"{r}.npz", source, bos)]
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(address, num_cpus)
    t0 = time.time()
    failed: list[str] = []
    try:
        task = ray.remote(_score_task).options(num_cpus=cpus_per_task, max_retries=2)
        kw = {"battery": str(Path(battery).resolve()), "batch_size": batch_size, "bos": bos, "max_unknown": max_unknown}
        refs = {task.remote(m, r, source, str(out.resolve()), kw): (m, r) for m, r in todo}
        bar = _bar(len(refs), log) if progress and refs else None
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=5.0)
            for ref in done:
                m, r = refs[ref]
                try:
                    ray.get(ref)
                except Exception as e:
                    cause = getattr(e, "cause", None) or e
                    failed.append(f"{m}@{r}: {type(cause).__name__}: {cause}")
                    log(f"[red]failed[/] {m} @ {r}: {cause}")
                if bar:
                    bar[0].advance(bar[1])
        if bar:
            bar[0].stop()
    finally:
        if started_here:
            ray.shutdown()
    runs = [str(assemble_run(out, m, str(battery), families)) for m in models
            if any((out / m / "revisions").glob("step*.npz"))]
    total = sum(len(r) for r in revs_of.values())
    return {"out": str(out), "scored": len(todo) - len(failed), "skipped": total - len(todo), "bos": bos,
            "failed": failed, "runs": runs, "wall_seconds": round(time.time() - t0, 2)}


def _score_task(model: str, revision: str, source: str, out_dir: str, kw: dict) -> dict:
    """The Ray task: score one (model, revision); ``kw``: battery, batch size, start token, unknown limit."""
    return score_revision(model, revision, source, out_dir=out_dir, **kw)


def _check(models: list[str], revisions: str, source: str, battery: str | Path,
           families: list[str] | None) -> dict[str, list[str]]:
    """Refuse bad input before any task starts; the revisions to score per model."""
    src = Source(source)
    if not models or any(not m.strip() for m in models):
        raise PublicError("models: give a comma-separated list, e.g. pythia-70m,pythia-160m")
    if len(set(models)) != len(models):
        raise PublicError("models: a model is listed twice")
    revs_of = {m: src.revisions(m) if revisions.strip() == "all" else parse_revisions(revisions) for m in models}
    empty = [m for m, r in revs_of.items() if not r]
    if empty:
        raise PublicError(f"models {empty}: the source {source} holds no checkpoints of them")
    items = read_battery(battery)
    if families:
        missing = sorted(set(families) - {it.family for it in items})
        if missing:
            raise PublicError(f"families: {missing} are not in the battery {battery}")
    return revs_of


class _Lines:
    """The bar's plain-text twin for a log (stdout not a terminal): ``advance`` / ``stop``."""

    def __init__(self, total: int, log) -> None:
        from runner._progress import Ticker

        self.n, self.t = 0, Ticker("public: scoring checkpoints", total, unit="checkpoints", log=log)

    def advance(self, _task) -> None:
        self.n += 1
        if self.n < (self.t.total or 0):
            self.t.update(self.n)

    def stop(self) -> None:
        self.t.done_line(self.n)


def _bar(total: int, log=print) -> tuple[Any, Any]:
    """A rich bar on a terminal, plain progress lines through ``log`` otherwise: ``(bar, task)``."""
    from runner._progress import plain_progress

    if plain_progress():
        return _Lines(total, log), None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    p = Progress(TextColumn("[bold]scoring checkpoints"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    p.start()
    return p, p.add_task("score", total=total)
