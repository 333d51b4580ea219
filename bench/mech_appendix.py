"""The appendix measures read from the zarr capture vs recomputed from the weights, and capture +
all measures as a fraction of training time.

    python bench/mech_appendix.py RUN_DIR [--family F] [--threads 1]
    python bench/mech_appendix.py            # trains a tiny run in a temporary folder first

Three timed phases on the same run, after a warm-up that imports TransformerLens and builds the
model once (so no phase pays the import): the capture of every checkpoint and family
(``mech.capture.capture_run``, default kinds, into a temporary store: the run and a sweep's store
stay untouched); every appendix measure with rows read from that capture
(``mech.appendix.appendix_run(source="capture")``); the same with rows recomputed from each
checkpoint's weights (``source="weights"``). Prints the wall times, the ratio capture-read /
recomputed (whole analysis, and the part the capture serves: reading the rows, the decomposition
and the decodability; patching, ablation and projection run the model either way), the largest
difference between the two results' logit gaps, and (capture + measures) / training time, where
training time is the store attribute ``train_seconds``. That was measured when the run trained, maybe
under another load (a shared machine): ``--retrain-steps N`` (default 300) also trains the run's own
config for N steps on a fresh corpus in a temporary folder, in the same window as the other phases,
and scales its ``train_seconds`` to the run's step count (the corpus build is not timed), so the
fraction is also given with every phase under the same load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SERVED = ("read", "decompose", "decode")  # the timing entries that differ between the two sources


def _tiny_run(out: Path) -> Path:
    from runner.config import RunConfig
    from runner.train import train_run

    cfg = RunConfig.model_validate({"corpus": {"name": "web", "n_stories": 4000, "seed": 0},
                                    "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_ctx": 64},
                                    "train": {"steps": 120, "batch_size": 16, "seed": 7},
                                    "schedule": {"every": 20, "keep_resume": 1},
                                    "probes": {"n_per_cell": 16, "n_neutral": 8}})
    return train_run(cfg, out, progress=False, log=lambda *_: None)


def _train_now(run_dir: Path, steps: int, tmp: Path) -> float:
    """Seconds the run's training loop takes now: its config trained for ``steps`` steps (fresh
    corpus of the same kind, just large enough), ``train_seconds`` scaled to the run's steps."""
    from runner.config import RunConfig
    from runner.store import open_run_store
    from runner.train import train_run

    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    short = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps}),
                                   "corpus": cfg.corpus.model_copy(update={
                                       "n_stories": min(cfg.corpus.n_stories, steps * cfg.train.batch_size + 2000)})})
    out = train_run(short, tmp / "retrain", progress=False, log=lambda *_: None)
    return float(open_run_store(out).attrs["train_seconds"]) * cfg.train.steps / steps


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def _served(res: dict) -> float:
    return sum(r["timing"].get(k, 0.0) for r in res["families"].values() for k in SERVED)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a complete run folder (default: train a tiny run first)")
    ap.add_argument("--family", default=None, help="one family (default: every family of the battery)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retrain-steps", type=int, default=300, help="0: use only the stored train_seconds")
    args = ap.parse_args(argv)

    import numpy as np

    from mech.appendix import appendix_run
    from mech.capture import capture_run, checkpoint_steps
    from runner.model import load_model
    from runner.store import open_run_store

    with tempfile.TemporaryDirectory(prefix="ungrok-appendix-bench-") as tmp:
        tmp = Path(tmp)
        run_dir = Path(args.run_dir) if args.run_dir else _tiny_run(tmp / "runs")
        attrs = open_run_store(run_dir).attrs
        if not attrs.get("complete") or "train_seconds" not in attrs:
            raise SystemExit(f"{run_dir}: not a complete run (no train_seconds in its store attrs)")
        load_model(run_dir)  # warm-up: imports and one model build, paid by no phase
        train_now = _train_now(run_dir, args.retrain_steps, tmp) if args.run_dir and args.retrain_steps else None
        where = {"store": tmp / "capture.zarr", "group": "bench"}
        fams = [args.family] if args.family else None
        cap, cap_s = _timed(capture_run, run_dir, families=fams, threads=args.threads, **where)
        kw = {"family": args.family, "threads": args.threads, "plots": False, **where}
        a, a_s = _timed(appendix_run, run_dir, out_dir=tmp / "from_capture", source="capture", **kw)
        b, b_s = _timed(appendix_run, run_dir, out_dir=tmp / "from_weights", source="weights", **kw)
        diff = max(float(np.max(np.abs(np.asarray(a["families"][f]["decompose"]["total"])
                                       - np.asarray(b["families"][f]["decompose"]["total"])))) for f in a["families"])
        train_s = float(attrs["train_seconds"])
        n_items = sum(f["n_items"] for f in cap["families"].values())
        print(f"run              {run_dir.name}: {len(checkpoint_steps(run_dir))} checkpoints, {n_items} items, "
              f"{len(cap['families'])} families")
        print(f"capture          {cap_s:.1f} s")
        print(f"measures         from capture {a_s:.1f} s, recomputed from weights {b_s:.1f} s: ratio {a_s / b_s:.3f}")
        print(f"  capture-served part (read + decompose + decode): {_served(a):.1f} s vs {_served(b):.1f} s: "
              f"ratio {_served(a) / _served(b):.3f}")
        print(f"same result      max |gap(capture) - gap(weights)| over checkpoints {diff:.2e}")
        print(f"train seconds    {train_s:.1f}")
        print(f"fraction         (capture + measures) / training = {(cap_s + a_s) / train_s:.3f} "
              f"(capture {cap_s / train_s:.3f}, measures {a_s / train_s:.3f})")
        if train_now:
            print(f"train now        {train_now:.1f} s ({args.retrain_steps} steps of its config, scaled)")
            print(f"fraction now     (capture + measures) / training now = {(cap_s + a_s) / train_now:.3f} "
                  f"(capture {cap_s / train_now:.3f}, measures {a_s / train_now:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
