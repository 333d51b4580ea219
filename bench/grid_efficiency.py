"""Grid efficiency on a local Ray and Ray's per-task overhead.

Runs a small grid (default: web x packed x 4 seeds, tiny model, 300 steps) on a local Ray with
every core, then prints: wall time, sum of run times, efficiency = sum of run times / (workers x
wall), and the per-task overhead = (task wall seen by the task) - (train_run time), plus the
round-trip of an empty task in a fresh worker process (max_calls=1, what every cell pays).

    python bench/grid_efficiency.py [--seeds 4] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    import ray

    from cluster.sweep import init_ray, run_sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "g.toml"
        spec.write_text(SPEC.format(seeds=list(range(args.seeds)), n=args.steps * 32, steps=args.steps))
        # Build the corpus once outside the timing (every cell shares it).
        from runner.corpora import build_corpus
        from runner.grid import load_grid

        build_corpus(load_grid(spec).cells()[0].config.corpus, Path(tmp) / "sw" / "corpora")
        init_ray(num_cpus=workers)
        t = time.time()
        ray.get(ray.remote(_noop).remote())
        t_first = time.time() - t
        fresh = []
        for _ in range(5):
            t = time.time()
            ray.get(ray.remote(max_calls=1)(_noop).remote())
            fresh.append(time.time() - t)
        res = run_sweep(spec, Path(tmp) / "sw", progress=False)
        ray.shutdown()
    print(f"machine: {workers} cores; grid: {args.seeds} cells x {args.steps} steps (d32 model), 1 CPU per cell")
    print(f"{'figure':<44}{'value':>12}")
    print(f"{'wall time (s)':<44}{res['wall_seconds']:>12.1f}")
    print(f"{'sum of run times (s)':<44}{res['sum_run_seconds']:>12.1f}")
    print(f"{'efficiency = sum / (workers x wall)':<44}{res['efficiency']:>12.3f}")
    print(f"{'runs/hour':<44}{res['ran'] / res['wall_seconds'] * 3600:>12.1f}")
    print(f"{'empty task, first (worker start) (s)':<44}{t_first:>12.2f}")
    print(f"{'empty task in a fresh worker, median (s)':<44}{statistics.median(fresh):>12.2f}")


if __name__ == "__main__":
    main()
