"""Grid efficiency on a local Ray and Ray's per-task overhead.

Runs a small grid (default: web x packed x 4 seeds, tiny model, 300 steps) on a local Ray with
every core, then prints: wall time, sum of run times, efficiency = sum of run times / (workers x
wall), plus the round-trip of an empty task in a fresh worker process (max_calls=1, what every
cell pays) and the per-cell fixed cost: what a fresh worker spends before its first training step,
timed phase by phase inside one (imports of torch / ray / ungrok's trainer / DeepSpeed, the model
library's import on the first model build, the process group, the corpus (stream) load, the
DeepSpeed engine), plus the empty task's round trip for the worker itself.

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


def _fixed_cost(cfg_json: str, corpora_dir: str) -> dict:
    """In a fresh worker: seconds of each phase a cell pays before its first step (in order)."""
    t, out = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        out[name], t = now - t, now

    import torch  # noqa: F401

    lap("import torch")
    from runner.config import RunConfig
    from runner.train import train_run  # noqa: F401
    from runner.train.loop import _load_corpora, build_engine

    lap("import ungrok trainer")
    import deepspeed  # noqa: F401

    lap("import deepspeed")
    from runner.model import build_model

    cfg = RunConfig.model_validate_json(cfg_json)
    build_model(cfg.model, 64, cfg.train.seed)
    lap("model build (incl. transformer_lens import)")
    from runner.train.dist import ensure_process_group

    ensure_process_group()
    lap("process group")
    corpus, _ = _load_corpora(cfg, Path(corpora_dir))
    lap("stream load")
    build_engine(cfg, build_model(cfg.model, corpus.tokenizer.get_vocab_size(), cfg.train.seed), 1)
    lap("engine init")
    return out


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
            cell = load_grid(spec).cells()[0].config.model_dump_json()
            fixed = ray.get(ray.remote(max_calls=1)(_fixed_cost).remote(cell, str(Path(tmp) / "sw" / "corpora")))
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
        {"figure": "per-cell fixed cost: fresh worker to first training step (s)",
         "value": f"{statistics.median(fresh) + sum(fixed.values()):.2f}",
         "conditions": "empty-task round trip + " + ", ".join(f"{k} {v:.2f}" for k, v in fixed.items())},
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
