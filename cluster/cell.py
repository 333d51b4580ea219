"""What one sweep worker does, whichever executor started it (Ray's task or a local process).

Both bodies are Ray-free: :mod:`cluster.sweep` wraps them in Ray tasks, :mod:`cluster.sweep_local`
in a local process pool. They import torch and the trainer inside the function, so a worker
process pays for those imports only when it runs a cell.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cluster.sweep_plan import stream_key
from runner._io import hold_folder, utcnow
from runner._progress import PREFIX, fmt_seconds


def train_cell(cfg_json: str, sweep_dir: str, node_id: str, start: str = "in-process") -> dict:
    """Train (or resume) one cell of a sweep folder; append this attempt (node id, pid, start
    time, and how its process started: ``start``) to the run's ``attempts.jsonl`` first, so a
    killed attempt is still on record.

    The run folder is held (``runner._io.hold_folder``) while it trains: a second worker on the
    same cell fails at once instead of writing beside it. Returns the attempt with ``run_id`` and
    the cell's wall ``seconds``."""
    import torch

    from runner.config import RunConfig
    from runner.train import train_run

    cfg = RunConfig.model_validate_json(cfg_json)
    sweep = Path(sweep_dir)
    run_dir = sweep / "runs" / cfg.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = {"node_id": node_id, "pid": os.getpid(), "started_utc": utcnow("seconds"), "start": start}
    with open(run_dir / "attempts.jsonl", "a") as f:
        f.write(json.dumps(attempt) + "\n")
    t0 = time.time()
    torch.set_num_threads(cfg.train.threads)
    with hold_folder(run_dir, "run folder"):  # rank 0 under Ray Train; a retry after a kill finds it free
        train_run(cfg, sweep / "runs", progress=False, corpora_dir=sweep / "corpora",
                  store_root=sweep / "store.zarr", log=lambda *a: None)
    return {**attempt, "run_id": cfg.run_id, "seconds": time.time() - t0}


def build_stream(cfg_json: str, sweep_dir: str) -> str:
    """Build a cell's corpus and intervened stream under the sweep's ``corpora/`` (shared by the
    cells that train on it); returns the stream's path."""
    from runner.config import RunConfig
    from runner.data.streams import build_streams

    base, dosed = build_streams(RunConfig.model_validate_json(cfg_json), Path(sweep_dir) / "corpora")
    return str(dosed or base)


class StreamError(RuntimeError):
    """A stream (corpus or intervened stream) could not be built; no cell was started."""


def collect_streams(plan, waits, log=print) -> dict[str, str]:
    """Wait for the stream builds of ``plan.streams``, one line per build as it ends.

    ``waits`` pairs each stream's first cell with a function ``get(what, t0, log)`` that returns
    the build's result or raises its error (the executor's own waiting: Ray's refs, a pool's
    futures). An intervention that cannot be applied (a disjointness-gate violation, an impossible
    dose) stops the sweep with :class:`StreamError` naming the stream, before any cell starts.
    Any other build error (e.g. a missing dataset) fails just the cells of that stream: returns
    ``{run_id: traceback}`` for them, and they are not started."""
    import traceback

    from interventions import InterventionError

    if waits:
        log(f"building {len(waits)} stream(s) before training")
    broken: dict[str, str] = {}
    t0 = time.time()
    for i, (c, get) in enumerate(waits, 1):
        what = f"stream {i}/{len(waits)} ({c.corpus} / {c.dose})"
        try:
            get(what, t0, log)
            log(f"{PREFIX} {what}: built ({fmt_seconds(time.time() - t0)} since the builds began)")
        except Exception as e:  # the task's own error (Ray's RayTaskError wraps it)
            log(f"{PREFIX} {what}: failed")
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, InterventionError):
                raise StreamError(f"stream of {c.corpus} / {c.dose}: {type(cause).__name__}: {cause}") from None
            broken[stream_key(c.config)] = "".join(traceback.format_exception(e))[-4000:]
    return {c.run_id: broken[stream_key(c.config)] for c in plan.to_run if stream_key(c.config) in broken}
