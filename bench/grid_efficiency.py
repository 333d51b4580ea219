"""Grid efficiency and the per-cell fixed cost, on a local Ray or on local process pools.

Runs a small grid (default: web x packed x 4 seeds, tiny model, 300 steps) with every core, then
prints: wall time, sum of run times, efficiency = sum of run times / (workers x wall), and the
per-cell fixed cost: what a fresh worker spends before its first training step, timed phase by
phase inside one (``cluster.fixed_cost``: imports of torch / ungrok's trainer / DeepSpeed, the
model library's import on the first model build, the process group, the corpus (stream) load,
the DeepSpeed engine).

``--executor ray``: the grid on a local Ray (its CPU cells in forks of the node's warm server,
``cluster.zygote``; the server's start, once per sweep, in the wall), the round trip of an empty
task in a fresh worker process (max_calls=1, what every cell pays), and the fixed cost both ways
in the same run: in a fork of a warm server, timed from the driver's submit (median of 3 fresh
tasks), and in the fresh worker itself (what a GPU cell still pays; the empty-task round trip
added to its phases).
``--executor processes`` (``ungrok sweep --executor processes``): the grid in local process
pools whose CPU workers are forks of a warm forkserver (``cluster.preload``); the fixed cost is
measured from the driver's submit to the end of engine init, inside a forked worker (median of 3,
each a new process), and, in the same run, once in a spawned worker for the ratio. The grid runs
twice: as a sweep command pays it (the forkserver's start and imports included), then again with
the server warm (the analogue of the Ray bench, which starts Ray before its timing).

    python bench/grid_efficiency.py [--seeds 4] [--steps 300] [--executor ray|processes]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SPEC = """
name = "bench"
[axes]
corpora = ["web"]
budgets = ["packed"]
seeds = {seeds}
[corpus]
n_stories = {n}
[model]
d_model = 32
n_heads = 2
d_mlp = 64
[train]
steps = {steps}
[schedule]
every = 50
[resources]
num_cpus = 1
"""


def _noop():
    return os.getpid()


def _grid(tmp: str, seeds: int, steps: int) -> Path:
    """The bench's grid spec under ``tmp``, its corpus built (outside any timing: cells share it)."""
    from runner.data.corpora import build_corpus
    from runner.grid import load_grid

    spec = Path(tmp) / "g.toml"
    spec.write_text(SPEC.format(seeds=list(range(seeds)), n=steps * 32, steps=steps))
    build_corpus(load_grid(spec).cells()[0].config.corpus, Path(tmp) / "sw" / "corpora")
    return spec


def _grid_rows(res, cond: str) -> list[dict]:
    return [
        {"figure": "grid efficiency = sum of run times / (workers x wall)", "value": f"{res.efficiency:.3f}",
         "conditions": f"{cond}; wall {res.wall_seconds:.1f} s, sum {res.sum_run_seconds:.1f} s"},
        {"figure": "runs/hour", "value": f"{res.ran / res.wall_seconds * 3600:.0f}", "conditions": "same run"},
    ]


def _phases(fixed: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in fixed["phases"].items())


def measure_ray(seeds: int = 4, steps: int = 300) -> list[dict]:
    """Rows for ``--executor ray`` (see the module docstring)."""
    import ray

    from cluster.fixed_cost import fixed_cost
    from cluster.sweep import init_ray, run_sweep
    from runner.grid import load_grid

    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        spec = _grid(tmp, seeds, steps)
        init_ray(num_cpus=workers)
        try:
            t = time.time()
            ray.get(ray.remote(_noop).remote())
            t_first = time.time() - t
            fresh = []
            for _ in range(5):
                t = time.time()
                ray.get(ray.remote(max_calls=1)(_noop).remote())
                fresh.append(time.time() - t)
            cell = load_grid(spec).cells()[0].config.model_dump_json()
            corpora = str(Path(tmp) / "sw" / "corpora")
            fixed = ray.get(ray.remote(max_calls=1)(fixed_cost).remote(cell, corpora))
            warm = _ray_warm_fixed(cell, corpora)
            res = run_sweep(spec, Path(tmp) / "sw", progress=False)
        finally:
            ray.shutdown()
    cond = f"local Ray, {workers} workers, {seeds} cells x {steps} steps (d32 model), 1 CPU per cell"
    cold = statistics.median(fresh) + sum(fixed["phases"].values())
    warm_s = sum(warm["phases"].values())
    return _grid_rows(res, cond) + [
        {"figure": "Ray empty task in a fresh worker, median (s)", "value": f"{statistics.median(fresh):.2f}",
         "conditions": f"max_calls=1, what every cell pays once; first task (worker start) {t_first:.2f} s"},
        {"figure": "per-cell fixed cost, cell in a fork of the node's warm server (s)", "value": f"{warm_s:.2f}",
         "conditions": f"what a sweep's CPU cell pays (cluster.zygote), median of 3 fresh tasks: {_phases(warm)}; "
                       f"forked: {warm['forked']}"},
        {"figure": "per-cell fixed cost, cell in the fresh worker itself (s)", "value": f"{cold:.2f}",
         "conditions": f"same run; what a cell paid before (and a GPU cell pays): empty-task round trip + "
                       f"{_phases(fixed)}; warm / in-worker: {warm_s / cold:.2f}"},
    ]


def _ray_warm_fixed(cell: str, corpora: str, n: int = 3) -> dict:
    """``cluster.fixed_cost`` in a fork of this node's warm server (:mod:`cluster.zygote`), from a
    fresh Ray task each time, timed from the driver's submit; the median of ``n`` by total."""
    import ray

    from cluster.zygote import call_warm, ready_servers, start_zygotes

    addresses, actors = start_zygotes()
    try:
        address = ready_servers(addresses, actors).get(ray.get_runtime_context().get_node_id())

        def task(submitted: float) -> dict | None:
            return call_warm(address, "cluster.fixed_cost:fixed_cost", [cell, corpora, submitted])

        runs = [ray.get(ray.remote(max_calls=1)(task).remote(time.time())) for _ in range(n)]
    finally:
        for a in actors:
            ray.kill(a)
    done = [r for r in runs if r is not None]
    if len(done) < n:
        raise RuntimeError("no warm server answered on this node")
    return sorted(done, key=lambda r: sum(r["phases"].values()))[n // 2]


def _fixed_in_pool(ctx, cell: str, corpora: str) -> dict:
    """``cluster.fixed_cost`` in a new one-cell worker of a CPU pool from ``ctx``, timed from submit."""
    from cluster.fixed_cost import fixed_cost
    from cluster.sweep_local import cpu_pool

    with cpu_pool(1, ctx) as pool:
        return pool.submit(fixed_cost, cell, corpora, time.time()).result()


def measure_processes(seeds: int = 4, steps: int = 300) -> list[dict]:
    """Rows for ``--executor processes`` (see the module docstring)."""
    import multiprocessing as mp

    from cluster.sweep_local import cpu_context, run_sweep_local
    from runner.grid import load_grid

    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        spec = _grid(tmp, seeds, steps)
        shutil.copytree(Path(tmp) / "sw" / "corpora", Path(tmp) / "warm" / "corpora")
        res = run_sweep_local(spec, Path(tmp) / "sw", workers=workers, progress=False, log=lambda *a: None)
        warm = run_sweep_local(spec, Path(tmp) / "warm", workers=workers, progress=False, log=lambda *a: None)
        cell, corpora = load_grid(spec).cells()[0].config.model_dump_json(), str(Path(tmp) / "sw" / "corpora")
        ctx = cpu_context("forkserver")  # the sweep's server, warm and still running
        forked = [_fixed_in_pool(ctx, cell, corpora) for _ in range(3)]
        spawned = _fixed_in_pool(mp.get_context("spawn"), cell, corpora)
    mid = sorted(forked, key=lambda f: sum(f["phases"].values()))[len(forked) // 2]  # the median's phases
    cond = f"local process pools, {workers} CPU workers, {seeds} cells x {steps} steps (d32 model), 1 CPU per cell"
    late = ", ".join(mid["late_imports"]) or "none"
    return _grid_rows(res, cond + "; includes the forkserver's start and imports") + [
        {"figure": "grid efficiency, forkserver already warm", "value": f"{warm.efficiency:.3f}",
         "conditions": f"the same grid again in this process (as Ray's bench starts Ray before its timing); "
                       f"wall {warm.wall_seconds:.1f} s, sum {warm.sum_run_seconds:.1f} s"},
        {"figure": "per-cell fixed cost: submit to first training step, forked worker (s)",
         "value": f"{sum(mid['phases'].values()):.2f}",
         "conditions": f"median of 3 new processes{'' if all(f['forked'] for f in forked) else ' (NOT all forked)'}: "
                       f"{_phases(mid)}; imported late: {late}"},
        {"figure": "forkserver's imports, paid once per sweep (s)", "value": f"{mid['server_imports']:.2f}",
         "conditions": "same run, before the first fork; the stream builds wait for it"},
        {"figure": "per-cell fixed cost: submit to first training step, spawned worker (s)",
         "value": f"{sum(spawned['phases'].values()):.2f}", "conditions": f"same run, 1 process: {_phases(spawned)}"},
    ]


def measure(seeds: int = 4, steps: int = 300, executor: str = "ray") -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    if executor not in ("ray", "processes"):
        raise ValueError(f"executor {executor!r}: use ray or processes")
    return (measure_ray if executor == "ray" else measure_processes)(seeds, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--executor", choices=("ray", "processes"), default="ray")
    args = ap.parse_args()
    from _table import print_rows

    print_rows(measure(args.seeds, args.steps, args.executor))


if __name__ == "__main__":
    main()
