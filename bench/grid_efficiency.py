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


def measure(seeds: int = 4, steps: int = 300) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    import ray

    from cluster.sweep import init_ray, run_sweep
    from runner.data.corpora import build_corpus
    from runner.grid import load_grid

    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "g.toml"
        spec.write_text(SPEC.format(seeds=list(range(seeds)), n=steps * 32, steps=steps))
        # Build the corpus once outside the timing (every cell shares it).
        build_corpus(load_grid(spec).cells()[0].config.corpus, Path(tmp) / "sw" / "corpora")
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
            res = run_sweep(spec, Path(tmp) / "sw", progress=False)
        finally:
            ray.shutdown()
    cond = f"local Ray, {workers} workers, {seeds} cells x {steps} steps (d32 model), 1 CPU per cell"
    return [
        {"figure": "grid efficiency = sum of run times / (workers x wall)", "value": f"{res.efficiency:.3f}",
         "conditions": f"{cond}; wall {res.wall_seconds:.1f} s, sum {res.sum_run_seconds:.1f} s"},
        {"figure": "runs/hour", "value": f"{res.ran / res.wall_seconds * 3600:.0f}", "conditions": "same run"},
        {"figure": "Ray empty task in a fresh worker, median (s)", "value": f"{statistics.median(fresh):.2f}",
         "conditions": f"max_calls=1, what every cell pays once; first task (worker start) {t_first:.2f} s"},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    from _table import print_rows

    print_rows(measure(args.seeds, args.steps))


if __name__ == "__main__":
    main()
