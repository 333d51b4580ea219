"""Sweeps without Ray: the same plan, folder, manifest, store and callbacks as :mod:`cluster.sweep`,
run by local process pools on one machine.

For a machine where Ray is not installed or not wanted (a lent GPU box that cannot fetch Ray's
wheel, a laptop). What stays the same as on Ray: every cell trains in a fresh process that runs
exactly one cell (``max_tasks_per_child=1``, Ray's ``max_calls=1``: DeepSpeed's process group
dies with the process); streams are built once each, in parallel, before any training; a
failing cell is recorded with its traceback and the others go on; rerunning skips complete cells
and resumes unfinished ones from their last checkpoint. What Ray adds and this does not: retries
of killed workers, several nodes, Ray's resource accounting (a cell's ``num_cpus`` divides the
worker count here), dashboards and jobs.

GPU: ``gpu_workers`` cells at a time run on the machine's CUDA device (all on device 0, each its
own process and CUDA context); the other ``workers - gpu_workers`` run with CUDA hidden
(``CUDA_VISIBLE_DEVICES=""``), so one sweep can fill a GPU box's CPU cores and its GPU at once.
A cell's ``train.precision = "auto"`` resolves to bf16 on the GPU and fp32 on a CPU: name the
precision in the grid when cells of one sweep must compute alike. Which device trained a run is in
its ``run.json``.

Start: a CPU worker (and a stream build) is a fork of a warm forkserver that imported torch,
transformer_lens, DeepSpeed and the trainer once, with CUDA hidden (:mod:`cluster.preload`), so a
cell pays no import; a GPU worker is spawned (a fresh interpreter: CUDA state is never forked).
``cpu_start="spawn"`` spawns the CPU workers too. Either way a worker dies with the driver (Linux):
a CPU worker with the forkserver, which dies with the driver.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from cluster.cell import build_stream, collect_streams, train_cell
from cluster.preload import warm_context
from cluster.sweep import _consolidate
from cluster.sweep_callbacks import CallbackList, ManifestWriter
from cluster.sweep_plan import SweepPlan, SweepResult, copy_reused, plan_sweep, prepare_sweep
from cluster.sweep_ui import LiveTable, ProgressLines
from runner._io import hold_folder
from runner._progress import PREFIX, fmt_seconds, plain_progress
from runner.config import RunConfig
from runner.grid import GridError


def _init_worker(hide_cuda: bool) -> None:
    """Pool initializer: die with the parent process (Linux: the parent-death signal is SIGKILL;
    the parent is the driver for a spawned worker, the forkserver for a forked one, and the
    forkserver dies with the driver; so a killed driver leaves no worker training on, holding its
    run folder, and a rerun resumes the cell at once; elsewhere a worker outlives its driver until
    its cell ends), and for the CPU workers, no CUDA device (set before torch loads; a forked
    worker's server had it hidden already)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the driver died before the signal was armed
            os._exit(1)
    if hide_cuda:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _cell(cfg_json: str, sweep_dir: str, where: str) -> dict:
    """A pool worker's one cell. What its libraries print (DeepSpeed's accelerator notice,
    TransformerLens's "Moving model to device") goes to the run's ``worker.log``, not the
    driver's terminal, as a Ray worker's output goes to Ray's logs; the cell's own error still
    reaches the driver through the future."""
    run_dir = Path(sweep_dir) / "runs" / RunConfig.model_validate_json(cfg_json).run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(run_dir / "worker.log", "ab", buffering=0) as log:  # this process runs one cell, then exits
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    return train_cell(cfg_json, sweep_dir, f"{socket.gethostname()}:{where}")


def default_workers(plan: SweepPlan) -> int:
    """Cells at a time when not told: this machine's cores over one cell's CPUs."""
    return max(1, int((os.cpu_count() or 1) // max(plan.resources.num_cpus, 1.0)))


def check_workers(plan: SweepPlan, workers: int, gpu_workers: int, cpu_start: str = "forkserver") -> None:
    """Refuse what a local pool cannot do, before anything is written."""
    if cpu_start not in ("forkserver", "spawn"):
        raise ValueError(f"cpu_start {cpu_start!r}: use 'forkserver' or 'spawn'")
    if workers < 1:
        raise GridError(f"--workers {workers}: at least 1 cell at a time")
    if not 0 <= gpu_workers <= workers:
        raise GridError(f"--gpu-workers {gpu_workers}: between 0 and --workers ({workers})")
    if plan.resources.num_gpus > 1:
        raise GridError(f"resources.num_gpus = {plan.resources.num_gpus}: a cell on several GPUs runs under "
                        "Ray Train; use --executor ray")
    if plan.resources.custom:
        raise GridError(f"resources.custom {sorted(plan.resources.custom)}: custom resources need Ray; "
                        "use --executor ray or drop them")


def _build_streams(plan: SweepPlan, workers: int, ctx, log) -> dict[str, str]:
    """Every stream of ``plan.streams`` in a pool of ``workers`` processes from ``ctx`` (CUDA hidden)."""
    if not plan.streams:
        return {}
    with ProcessPoolExecutor(min(workers, len(plan.streams)), mp_context=ctx, initializer=_init_worker,
                             initargs=(True,)) as pool:
        futs = [(c, pool.submit(build_stream, c.config.model_dump_json(), str(plan.sweep_dir)))
                for c in plan.streams]

        def getter(fut: Future):
            def get(what: str, t0: float, log) -> str:
                while True:
                    done, _ = wait([fut], timeout=30.0)
                    if done:
                        return fut.result()
                    log(f"{PREFIX} {what}: still building ({fmt_seconds(time.time() - t0)} since the builds began)")
            return get

        return collect_streams(plan, [(c, getter(f)) for c, f in futs], log)


def cpu_pool(n: int, ctx) -> ProcessPoolExecutor:
    """``n`` CPU workers (CUDA hidden) from ``ctx``, one cell each."""
    return ProcessPoolExecutor(n, mp_context=ctx, max_tasks_per_child=1, initializer=_init_worker, initargs=(True,))


def cpu_context(cpu_start: str, log=print, *, needed: bool = True):
    """The start method of CPU workers: ``"forkserver"`` (a warm one, :mod:`cluster.preload`; spawn
    where none can be had) or ``"spawn"`` (checked by :func:`check_workers`). ``needed=False`` (no
    CPU worker will start): spawn, and no server is started."""
    return (needed and cpu_start == "forkserver" and warm_context(log)) or mp.get_context("spawn")


def _pools(workers: int, gpu_workers: int, cpu_ctx) -> list[tuple[ProcessPoolExecutor, str, int]]:
    """(pool, where, slots): a GPU pool of ``gpu_workers`` (spawned) and a CPU pool (CUDA hidden,
    from ``cpu_ctx``) of the rest."""
    pools = []
    if gpu_workers:
        pools.append((ProcessPoolExecutor(gpu_workers, mp_context=mp.get_context("spawn"), max_tasks_per_child=1,
                                          initializer=_init_worker, initargs=(False,)), "gpu", gpu_workers))
    if workers > gpu_workers:
        pools.append((cpu_pool(workers - gpu_workers, cpu_ctx), "cpu", workers - gpu_workers))
    return pools


def _train_all(plan: SweepPlan, cells: list, pools, cb: CallbackList, results: dict, errors: dict) -> None:
    """Hand the cells, in the grid's order, to whichever pool has a free slot first; record each
    result or traceback as it ends (never swallowed)."""
    queue = deque(cells)
    running: dict[Future, tuple] = {}
    busy = {where: 0 for _, where, _ in pools}
    cb.on_poll()
    while queue or running:
        for pool, where, slots in pools:
            while queue and busy[where] < slots:
                c = queue.popleft()
                running[pool.submit(_cell, c.config.model_dump_json(), str(plan.sweep_dir), where)] = (c, where)
                busy[where] += 1
                cb.on_cell_start(c)
        done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
        for fut in done:
            c, where = running.pop(fut)
            busy[where] -= 1
            try:
                results[c.run_id] = fut.result()
            except Exception as e:  # the cell's own error, or its process died
                errors[c.run_id] = "".join(traceback.format_exception(e))[-4000:]
                cb.on_cell_failed(c, errors[c.run_id])
            else:
                cb.on_cell_done(c, results[c.run_id])
        cb.on_poll()


def run_cells_local(plan: SweepPlan, callbacks=(), *, workers: int, gpu_workers: int = 0,
                    log=print, cpu_start: str = "forkserver") -> SweepResult:
    """Run a plan's cells in local process pools (see the module docstring), calling the
    callbacks' hooks at each lifecycle point as :func:`cluster.sweep.run_cells` does."""
    check_workers(plan, workers, gpu_workers, cpu_start)
    cpu_ctx = cpu_context(cpu_start, log, needed=bool(plan.streams or (plan.to_run and workers > gpu_workers)))
    cb = CallbackList(callbacks)
    cb.on_plan(plan)
    t_wall = time.time()
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    unbuilt = _build_streams(plan, workers, cpu_ctx, log)
    for c in plan.to_run:
        if c.run_id in unbuilt:
            errors[c.run_id] = unbuilt[c.run_id]
            cb.on_cell_failed(c, errors[c.run_id])
    pools = _pools(workers, gpu_workers, cpu_ctx)
    try:
        _train_all(plan, [c for c in plan.to_run if c.run_id not in unbuilt], pools, cb, results, errors)
    finally:
        cb.on_stop()
        for pool, _, _ in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    _consolidate(plan.sweep_dir / "store.zarr")  # every writer has finished
    result = SweepResult.of(plan, results, errors, time.time() - t_wall, float(workers * plan.resources.num_cpus))
    cb.on_end(result)
    return result


def run_sweep_local(spec_file: str | Path, sweep_dir: str | Path, *, workers: int | None = None,
                    gpu_workers: int = 0, progress: bool = True, log=print, reuse: list[Path] | None = None,
                    callbacks=(), cpu_start: str = "forkserver") -> SweepResult:
    """:func:`cluster.sweep.run_sweep` without Ray: plan (a bad spec raises GridError before
    anything is written), hold and prepare the folder, copy reusable cells in, run the rest in
    local process pools of ``workers`` cells at a time (default: cores / a cell's CPUs), of which
    ``gpu_workers`` on the GPU; ``cpu_start`` says how CPU workers start (see :func:`cpu_context`)."""
    plan = plan_sweep(spec_file, sweep_dir, list(reuse or []))
    n = workers if workers is not None else default_workers(plan)
    check_workers(plan, n, gpu_workers, cpu_start)
    with hold_folder(sweep_dir, "sweep folder"):
        sw = prepare_sweep(spec_file, sweep_dir)
        copy_reused(plan, log)
        shown = [ProgressLines(sw.dir, log) if plain_progress() else LiveTable(sw.dir)] if progress else []
        return run_cells_local(plan, [ManifestWriter(sw), *shown, *callbacks], workers=n, gpu_workers=gpu_workers,
                               log=log, cpu_start=cpu_start)
