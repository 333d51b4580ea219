"""Sweeps on Ray: one Ray task per grid cell, packed onto nodes by their resource requests.

Layout of a sweep folder (a shared filesystem path when the cluster has several nodes)::

    <sweep>/grid.toml        the spec as given        <sweep>/manifest.json   cells, run ids, states, errors
    <sweep>/corpora/         corpora, built once per corpus config and shared by seeds
    <sweep>/runs/<run_id>/   config, weights, DeepSpeed checkpoints, attempts.jsonl (node id, pid per attempt)
    <sweep>/store.zarr       one zarr store; run <id> writes only the group runs/<id> (no shared chunks);
                             metadata is consolidated by the driver once every writer has finished

Each cell runs in a fresh worker process (``max_calls=1``: DeepSpeed's process group and its
port die with the process); a CPU cell trains in a fork of its node's warm server, made for the
task (:mod:`cluster.zygote`: no import paid per cell); the driver holds no weights. A worker
killed mid-run is retried by Ray (``resources.max_retries``) and the retry resumes from the
run's last DeepSpeed checkpoint. An application error is recorded per cell with its traceback
and reported, never swallowed. Running the same sweep again skips complete cells and resumes
unfinished ones.

A run has the shape of a trainer with callbacks: :func:`~cluster.sweep_plan.plan_sweep` (pure,
no Ray) says what to do; :func:`run_cells` builds the streams, submits and waits, calling the
hooks of :mod:`cluster.sweep_callbacks` (the manifest writer, the live table of
:mod:`cluster.sweep_ui`); the result is a :class:`~cluster.sweep_plan.SweepResult`. Connecting to
Ray and submitting a sweep as a job live in :mod:`cluster.ray_setup`.
"""

from __future__ import annotations

import os
import time
import traceback
from functools import partial
from pathlib import Path

from cluster.cell import StreamError, build_stream, collect_streams, train_cell  # noqa: F401
from cluster.ray_setup import (  # noqa: F401
    _is_loopback,
    _present_token,
    check_reachable,
    check_resources,
    init_ray,
    submit,
)
from cluster.sweep_callbacks import CallbackList, ManifestWriter, SweepCallback  # noqa: F401
from cluster.sweep_plan import (  # noqa: F401
    Sweep,
    SweepPlan,
    SweepResult,
    copy_reused,
    plan_sweep,
    prepare_sweep,
    reuse_complete,
    stream_key,
)
from cluster.sweep_ui import LiveTable, ProgressLines, status_table, sweep_status  # noqa: F401
from cluster.zygote import cell_task, ready_servers, start_zygotes
from runner._io import hold_folder
from runner._progress import PREFIX, fmt_seconds, plain_progress
from runner.grid import GridError


def build_streams_first(plan: SweepPlan, log=print) -> dict[str, str]:
    """Build every stream the plan's cells need (``plan.streams``), once each, in parallel Ray
    tasks, before any training; the outcome as :func:`cluster.cell.collect_streams` says
    (an unappliable intervention raises :class:`StreamError`; other failures come back as
    ``{run_id: traceback}`` for the cells of that stream)."""
    import ray

    task = ray.remote(build_stream).options(**plan.stream_options)
    refs = {task.remote(c.config.model_dump_json(), str(plan.sweep_dir)): c for c in plan.streams}
    waits = [(c, partial(_get_logged, ref)) for ref, c in refs.items()]
    return collect_streams(plan, waits, log)


def _get_logged(ref, what: str, t0: float, log, every: float = 30.0):
    """``ray.get(ref)``, with a line every ``every`` seconds while it waits (a build can take
    minutes, and a log that says nothing looks dead)."""
    import ray
    from ray.exceptions import GetTimeoutError

    while True:
        try:
            return ray.get(ref, timeout=every)
        except GetTimeoutError:
            log(f"{PREFIX} {what}: still building ({fmt_seconds(time.time() - t0)} since the builds began)")


def _train_cell_multi(cfg_json: str, sweep_dir: str, n_workers: int, use_gpu: bool, cpus: float) -> dict:
    """A cell with > 1 GPU: DeepSpeed under Ray Train's TorchTrainer (one rank per GPU)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    def loop(_config):
        cell_task(cfg_json, sweep_dir, None)

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=n_workers, use_gpu=use_gpu,
                                                              resources_per_worker={"CPU": cpus}),
                           torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"))
    from runner.config import RunConfig

    t0 = time.time()
    trainer.fit()
    return {"run_id": RunConfig.model_validate_json(cfg_json).run_id, "seconds": time.time() - t0,
            "node_id": "ray-train", "pid": os.getpid()}


def _submit(plan: SweepPlan, cell, zygotes: dict[str, str] | None = None):
    """Submit one cell's Ray task: a fresh worker process (its cell in a fork of the node's warm
    server, ``zygotes``), or Ray Train for a cell with > 1 GPU."""
    import ray

    cfg_json, r = cell.config.model_dump_json(), plan.resources
    if plan.multi_gpu:
        task = ray.remote(_train_cell_multi).options(num_cpus=0, max_retries=r.max_retries)
        return task.remote(cfg_json, str(plan.sweep_dir), int(r.num_gpus), True, r.num_cpus)
    return ray.remote(max_calls=1)(cell_task).options(**plan.train_options).remote(cfg_json, str(plan.sweep_dir),
                                                                                    zygotes)


def _warm_servers(plan: SweepPlan) -> tuple[dict[str, str], list]:
    """The per-node warm servers for this run's cells (:mod:`cluster.zygote`): none when no cell
    is to run, or the cells ask for GPUs (CUDA state is never forked)."""
    if not plan.to_run or plan.multi_gpu or plan.resources.num_gpus:
        return {}, []
    return start_zygotes()


def _wait(refs: dict, cb: CallbackList, results: dict[str, dict], errors: dict[str, str]) -> None:
    """Wait for every submitted cell; record its result or its error (traceback), never swallow."""
    import ray

    cb.on_poll()
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=2.0)
        for ref in done:
            c = refs[ref]
            try:
                results[c.run_id] = ray.get(ref)
            except Exception as e:  # an application error in the task: record it, never swallow
                errors[c.run_id] = "".join(traceback.format_exception(e))[-4000:]
                cb.on_cell_failed(c, errors[c.run_id])
            else:
                cb.on_cell_done(c, results[c.run_id])
        cb.on_poll()


def _consolidate(store: Path) -> None:
    import warnings

    import zarr

    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec": known
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store))


def run_cells(plan: SweepPlan, callbacks=(), *, address: str | None = None, num_cpus: int | None = None,
              dashboard: bool = False, node_ip: str | None = None, log=print) -> SweepResult:
    """Run a plan on Ray (connecting or starting one unless one is up), calling the callbacks'
    hooks at each lifecycle point (see :mod:`cluster.sweep_callbacks`).

    Refuses a per-run request no node can satisfy (GridError) and an intervention that cannot be
    applied (StreamError) before any cell starts."""
    import ray

    cb = CallbackList(callbacks)
    cb.on_plan(plan)
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(address, num_cpus, dashboard, node_ip)
    t_wall = time.time()
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    try:
        check_resources(plan.spec)
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
        zygotes, servers = _warm_servers(plan)  # they import while the streams build
        refs = {}
        try:
            unbuilt = build_streams_first(plan, log)
            if any(c.run_id not in unbuilt for c in plan.to_run):
                zygotes = ready_servers(zygotes, servers)
            for c in plan.to_run:
                if c.run_id in unbuilt:
                    errors[c.run_id] = unbuilt[c.run_id]
                    cb.on_cell_failed(c, errors[c.run_id])
                else:
                    refs[_submit(plan, c, zygotes)] = c
                    cb.on_cell_start(c)
            _wait(refs, cb, results, errors)
        finally:
            cb.on_stop()
            for z in servers:
                ray.kill(z)
    finally:
        if started_here:
            ray.shutdown()
    _consolidate(plan.sweep_dir / "store.zarr")  # every writer has finished
    result = SweepResult.of(plan, results, errors, time.time() - t_wall, cluster_cpus)
    cb.on_end(result)
    return result


def run_sweep(spec_file: str | Path, sweep_dir: str | Path, *, address: str | None = None,
              num_cpus: int | None = None, progress: bool = True, dashboard: bool = False,
              node_ip: str | None = None, log=print, reuse: list[Path] | None = None,
              callbacks=()) -> SweepResult:
    """Run every unfinished cell of the grid on Ray; returns the run's :class:`SweepResult`.

    Plans first (a bad spec raises GridError before anything is written), then prepares the
    folder, copies cells complete in a ``reuse`` source in, and runs the rest with the manifest
    writer, the live table (``progress``) and ``callbacks``. ``result.failed`` names the cells
    whose task raised (tracebacks in the manifest). A dead ``address`` fails (ClusterUnreachable)
    before anything is written; the sweep folder is held (``runner._io.hold_folder``: a second
    driver on it gets FolderBusy naming this one's pid), and each cell's run folder by its worker.
    """
    import ray

    if num_cpus is not None and num_cpus < 1:
        raise GridError(f"--num-cpus {num_cpus}: the local Ray needs at least 1 CPU (leave it out for all)")
    plan = plan_sweep(spec_file, sweep_dir, list(reuse or []))
    if address is not None and not ray.is_initialized():
        check_reachable(address)  # a dead address fails here, before the folder is made
    with hold_folder(sweep_dir, "sweep folder"):
        sw = prepare_sweep(spec_file, sweep_dir)
        copy_reused(plan, log)
        shown = [ProgressLines(sw.dir, log) if plain_progress() else LiveTable(sw.dir)] if progress else []
        cbs = [ManifestWriter(sw), *shown, *callbacks]
        return run_cells(plan, cbs, address=address, num_cpus=num_cpus, dashboard=dashboard, node_ip=node_ip,
                         log=log)
