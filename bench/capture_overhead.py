"""Capture time as a fraction of training time for a run.

    python bench/capture_overhead.py RUN_DIR [--steps-every K] [--batch-size 64] [--threads 1]
    python bench/capture_overhead.py            # trains a tiny run in a temporary folder first

Training time is the store attribute ``train_seconds`` of a complete run (written by
``runner.store.RunStore.mark_complete``). The capture (``mech.capture.capture_run``, every
checkpoint and every family by default; ``--codec`` picks the arrays' codec, default capture's
own) is written to a temporary zarr store, so the run folder
and a sweep's shared store are left untouched. Prints both times, the fraction, and the capture
time per checkpoint.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _tiny_run(out: Path) -> Path:
    from runner.config import RunConfig
    from runner.train import train_run

    cfg = RunConfig(corpus={"name": "web", "n_stories": 4000, "seed": 0},
                    model={"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_ctx": 64},
                    train={"steps": 120, "batch_size": 16, "seed": 7},
                    schedule={"every": 20, "keep_resume": 1},
                    probes={"n_per_cell": 16, "n_neutral": 8})
    return train_run(cfg, out, progress=False, log=lambda *_: None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a complete run folder (default: train a tiny run first)")
    ap.add_argument("--steps-every", type=int, default=1, help="capture every K-th checkpoint (default all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--codec", default=None, help="capture codec (default: capture's own, see mech.capture_write)")
    args = ap.parse_args(argv)

    from mech.capture import capture_run, checkpoint_steps
    from mech.capture_write import DEFAULT_CODEC
    from runner.store import open_run_store

    args.codec = args.codec or DEFAULT_CODEC

    with tempfile.TemporaryDirectory(prefix="ungrok-capture-bench-") as tmp:
        tmp = Path(tmp)
        run_dir = Path(args.run_dir) if args.run_dir else _tiny_run(tmp / "runs")
        attrs = open_run_store(run_dir).attrs
        if not attrs.get("complete") or "train_seconds" not in attrs:
            raise SystemExit(f"{run_dir}: not a complete run (no train_seconds in its store attrs)")
        train_s = float(attrs["train_seconds"])
        steps = checkpoint_steps(run_dir)[:: args.steps_every]
        t0 = time.perf_counter()
        out = capture_run(run_dir, steps, batch_size=args.batch_size, threads=args.threads,
                          store=tmp / "capture.zarr", group="bench", codec=args.codec, progress=False)
        cap_s = time.perf_counter() - t0
        n_items = sum(f["n_items"] for f in out["families"].values())
        # capturing every K-th checkpoint: scale to all checkpoints for the fraction
        scale = len(checkpoint_steps(run_dir)) / len(steps)
        print(f"run            {run_dir.name}")
        print(f"checkpoints    {len(steps)} captured (of {len(checkpoint_steps(run_dir))}), {n_items} items, "
              f"{len(out['families'])} families")
        print(f"train seconds  {train_s:.1f}")
        print(f"capture secs   {cap_s:.1f}  ({cap_s / len(steps):.3f} s per checkpoint; codec {args.codec}, rows "
              "written on a background thread)")
        print(f"fraction       {cap_s * scale / train_s:.3f}  (capture of every checkpoint / training time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
