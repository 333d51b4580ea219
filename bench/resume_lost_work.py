"""Work lost to a SIGKILL: steps redone and extra wall time when a killed run is resumed.

    python bench/resume_lost_work.py [--steps 600] [--every 50] [--kills 3] [--seed 0]

Trains the run default (2-layer d64, batch 32x64, ``web``/packed) once uninterrupted through
``ungrok train`` in a subprocess, then --kills times the same command killed with SIGKILL at a
seeded random moment of its middle third and run again to completion (``ungrok train`` resumes
from the last DeepSpeed checkpoint). For each kill it reads the step the rerun resumed from
(its log line) and the step the killed process had reached: the trainer's per-step progress is
not persisted, so that step is estimated as resume step + (kill time - write time of the resume
step's weights) x the uninterrupted run's steps/s. Prints the mean steps redone (bounded by the
checkpoint interval) and the mean extra wall time of killed + resumed vs uninterrupted (process
start, DeepSpeed init and checkpoint load included).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _train(cfg_file: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cluster.cli", "train", "--config", str(cfg_file), "--out",
                             str(out), "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _timed(cfg_file: Path, out: Path) -> tuple[float, str]:
    t = time.time()
    p = _train(cfg_file, out)
    log = p.communicate()[0]
    if p.returncode:
        raise RuntimeError(log[-3000:])
    return time.time() - t, log


def measure(steps: int = 600, every: int = 50, kills: int = 3, seed: int = 0) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    from runner.config import RunConfig
    from runner.data.corpora import build_corpus
    from runner.model import weights_path

    rng = random.Random(seed)
    cfg = RunConfig(corpus={"name": "web", "n_stories": max(steps * 32, 8000), "seed": seed},
                    train={"steps": steps, "seed": seed}, schedule={"every": every})
    with tempfile.TemporaryDirectory(prefix="ungrok-resume-bench-") as tmp:
        tmp = Path(tmp)
        cfg_file = tmp / "cfg.json"
        cfg_file.write_text(cfg.model_dump_json())
        build_corpus(cfg.corpus, tmp / "ref" / "corpora")  # corpus builds stay out of the timings
        t_ref, _ = _timed(cfg_file, tmp / "ref")
        rate = steps / t_ref  # steps/s including start-up: a lower bound of the in-loop rate
        redone, extra = [], []
        for k in range(kills):
            out = tmp / f"k{k}"
            build_corpus(cfg.corpus, out / "corpora")
            t = time.time()
            p = _train(cfg_file, out)
            delay = rng.uniform(t_ref / 3, 2 * t_ref / 3)
            while time.time() - t < delay and p.poll() is None:
                time.sleep(0.02)
            if p.poll() is not None:
                raise RuntimeError("the run finished before the kill; use more --steps")
            p.send_signal(signal.SIGKILL)
            t_kill = time.time()
            p.wait()
            t_resumed, log = _timed(cfg_file, out)
            m = re.search(r"resumed from step (\d+)", log)
            if not m:
                raise RuntimeError(f"the rerun did not resume:\n{log[-2000:]}")
            r = int(m.group(1))
            since = t_kill - weights_path(out / cfg.run_id, r).stat().st_mtime
            redone.append(min(every, max(0.0, since * rate)))
            extra.append((t_kill - t) + t_resumed - t_ref)
    cond = f"default model, {steps} steps, checkpoint every {every}, {kills} kill(s) at seeded random times"
    return [
        {"figure": "steps redone after a SIGKILL (mean)", "value": f"{statistics.mean(redone):.0f}",
         "conditions": f"{cond}; estimated from checkpoint mtimes; bound = {every}"},
        {"figure": "extra wall time, killed + resumed vs uninterrupted (mean, s)",
         "value": f"{statistics.mean(extra):.1f}",
         "conditions": f"uninterrupted {t_ref:.1f} s incl. process start; restart + redone steps"},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from _table import print_rows

    print_rows(measure(a.steps, a.every, a.kills, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
