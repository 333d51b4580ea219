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
config for N steps on a fresh corpus in a temporary folder right after the other phases, scaled to
the run's step count (the corpus build is not timed), and every phase is also timed in CPU seconds
of the process (``time.process_time``; everything runs on 1 thread), which the machine's load
barely moves: the fraction is given both ways.
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


def _train_now(run_dir: Path, steps: int, tmp: Path) -> tuple[float, float]:
    """(wall, CPU) seconds the run's training loop takes now: its config trained for ``steps`` steps
    on a fresh corpus of the same kind, just large enough (built first by a 1-step run, untimed),
    scaled to the run's step count."""
    from runner.config import RunConfig
    from runner.train import train_run

    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    corpus = cfg.corpus.model_copy(update={"n_stories": min(cfg.corpus.n_stories, steps * cfg.train.batch_size + 2000)})

    def short(n: int) -> RunConfig:
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": n}), "corpus": corpus})

    train_run(short(1), tmp / "warm", progress=False, log=lambda *_: None)
    _, wall, cpu = _timed(train_run, short(steps), tmp / "retrain", progress=False, log=lambda *_: None,
                          corpora_dir=tmp / "warm" / "corpora")
    return wall * cfg.train.steps / steps, cpu * cfg.train.steps / steps


def _timed(fn, *args, **kw):
    """(result, wall seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0, time.process_time() - c0


def _served(res: dict) -> float:
    return sum(r["timing"].get(k, 0.0) for r in res["families"].values() for k in SERVED)


def _phases(run_dir: Path, tmp: Path, family: str | None, threads: int) -> dict:
    """The capture and the measures from the capture and from the weights, timed."""
    from mech.appendix import appendix_run
    from mech.capture import capture_run

    where = {"store": tmp / "capture.zarr", "group": "bench"}
    out: dict = {}
    out["cap"], out["cap_s"], out["cap_c"] = _timed(capture_run, run_dir, families=[family] if family else None,
                                                    threads=threads, **where)
    kw = {"family": family, "threads": threads, "plots": False, **where}
    out["a"], out["a_s"], out["a_c"] = _timed(appendix_run, run_dir, out_dir=tmp / "a", source="capture", **kw)
    out["b"], out["b_s"], out["b_c"] = _timed(appendix_run, run_dir, out_dir=tmp / "b", source="weights", **kw)
    return out


def _report(run_dir: Path, p: dict, train_s: float, now: tuple[float, float] | None, retrain_steps: int) -> None:
    import numpy as np

    from mech.capture import checkpoint_steps

    a, b = p["a"], p["b"]
    diff = max(float(np.max(np.abs(np.asarray(a["families"][f]["decompose"]["total"])
                                   - np.asarray(b["families"][f]["decompose"]["total"])))) for f in a["families"])
    n_items = sum(f["n_items"] for f in p["cap"]["families"].values())
    print(f"run              {run_dir.name}: {len(checkpoint_steps(run_dir))} checkpoints, {n_items} items, "
          f"{len(p['cap']['families'])} families")
    print(f"capture          {p['cap_s']:.1f} s wall, {p['cap_c']:.1f} s CPU")
    print(f"measures         from capture {p['a_s']:.1f} s wall / {p['a_c']:.1f} s CPU; recomputed from weights "
          f"{p['b_s']:.1f} / {p['b_c']:.1f}: ratio {p['a_s'] / p['b_s']:.3f} wall, {p['a_c'] / p['b_c']:.3f} CPU")
    print(f"  capture-served part (read + decompose + decode, wall): {_served(a):.1f} s vs {_served(b):.1f} s: "
          f"ratio {_served(a) / _served(b):.3f}")
    print(f"same result      max |gap(capture) - gap(weights)| over checkpoints {diff:.2e}")
    print(f"fraction         (capture + measures) / stored train_seconds {train_s:.1f} = "
          f"{(p['cap_s'] + p['a_s']) / train_s:.3f} wall")
    if now:
        print(f"train now        {now[0]:.1f} s wall, {now[1]:.1f} s CPU ({retrain_steps} steps of its config, scaled)")
        print(f"fraction now     (capture + measures) / training = {(p['cap_s'] + p['a_s']) / now[0]:.3f} wall, "
              f"{(p['cap_c'] + p['a_c']) / now[1]:.3f} CPU (capture {p['cap_c'] / now[1]:.3f}, "
              f"measures {p['a_c'] / now[1]:.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a complete run folder (default: train a tiny run first)")
    ap.add_argument("--family", default=None, help="one family (default: every family of the battery)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retrain-steps", type=int, default=300, help="0: use only the stored train_seconds")
    args = ap.parse_args(argv)

    from runner.model import load_model
    from runner.store import open_run_store

    with tempfile.TemporaryDirectory(prefix="ungrok-appendix-bench-") as tmp:
        tmp = Path(tmp)
        run_dir = Path(args.run_dir) if args.run_dir else _tiny_run(tmp / "runs")
        attrs = open_run_store(run_dir).attrs
        if not attrs.get("complete") or "train_seconds" not in attrs:
            raise SystemExit(f"{run_dir}: not a complete run (no train_seconds in its store attrs)")
        load_model(run_dir)  # warm-up: imports and one model build, paid by no phase
        phases = _phases(run_dir, tmp, args.family, args.threads)
        now = _train_now(run_dir, args.retrain_steps, tmp) if args.run_dir and args.retrain_steps else None
        _report(run_dir, phases, float(attrs["train_seconds"]), now, args.retrain_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
