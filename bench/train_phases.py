"""Scoring, checkpointing and capture overhead as fractions of training-step time, one default run.

    python bench/train_phases.py [--steps 1000] [--every 50]

Trains the run default (2-layer d64 model, batch 32x64, built-in ``web`` corpus, packed budget,
DeepSpeed ZeRO-0, 1 thread) for --steps steps with a checkpoint every --every steps, in a
temporary folder. The trainer times its own phases (store attributes ``step_seconds``,
``score_seconds``, ``checkpoint_seconds``; see ``runner.train.train_run``); the capture of every
checkpoint (``mech.capture.capture_run``, both families, default hook kinds) is then timed on the
finished run (its default codec, rows written on a background thread while the next checkpoint
runs; the model load and set-up included). Every fraction is over ``step_seconds`` (forward,
backward, optimizer step and data), so "0.10" means the phase costs 10% on top of the training
steps themselves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def measure(steps: int = 1000, every: int = 50, seed: int = 0) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    import torch

    from mech.capture import capture_run, checkpoint_steps
    from mech.capture_write import DEFAULT_CODEC
    from runner.config import RunConfig
    from runner.store import open_run_store
    from runner.train import train_run

    torch.set_num_threads(1)
    cfg = RunConfig(corpus={"name": "web", "n_stories": max(steps * 32, 8000), "seed": seed},
                    train={"steps": steps, "seed": seed}, schedule={"every": every})
    with tempfile.TemporaryDirectory(prefix="ungrok-phases-bench-") as tmp:
        tmp = Path(tmp)
        run = train_run(cfg, tmp / "runs", progress=False, log=lambda *_: None)
        a = dict(open_run_store(run).attrs)
        ck = checkpoint_steps(run)
        t = time.perf_counter()
        capture_run(run, ck, threads=1, store=tmp / "capture.zarr", group="bench", progress=False)
        cap = time.perf_counter() - t
    step_s = float(a["step_seconds"])
    cond = (f"default model, {steps} steps, {len(ck)} checkpoints (every {every}), "
            f"{cfg.probes.n_per_cell}-item cells, 1 thread; training steps {step_s:.1f} s")
    return [
        {"figure": "training steps/s (DeepSpeed ZeRO-0, in ungrok's trainer)", "value": f"{steps / step_s:.2f}",
         "conditions": cond},
        {"figure": "checkpoint scoring / training-step time", "value": f"{a['score_seconds'] / step_s:.3f}",
         "conditions": f"probe log-probs (packed forward) + zarr append (one round trip), {a['score_seconds']:.1f} s, "
                       f"{a['score_seconds'] / len(ck) * 1e3:.0f} ms per checkpoint"},
        {"figure": "checkpointing (weights + resume state) / training-step time",
         "value": f"{a['checkpoint_seconds'] / step_s:.3f}", "conditions": f"{a['checkpoint_seconds']:.1f} s"},
        {"figure": "mech capture of every checkpoint / training-step time", "value": f"{cap / step_s:.3f}",
         "conditions": f"both families, default hook kinds, float16, codec {DEFAULT_CODEC}, rows written on a "
                       f"background thread, {cap:.1f} s (model load and set-up included)"},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50)
    a = ap.parse_args(argv)
    from _table import print_rows

    print_rows(measure(a.steps, a.every))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
