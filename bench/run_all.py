"""Every benchmark, one table: ``python bench/run_all.py [--quick] [--demo-sweep DIR] [--out FILE]``.

Runs, in one process on this machine and in this order (each figure names its conditions):
training throughput (DeepSpeed vs plain PyTorch, ``train_throughput``), the trainer's phase
overheads and mech capture (``train_phases``), grid efficiency on a local Ray and the per-cell
fixed cost of a fresh worker (``grid_efficiency``), zarr vs ``numpy.save`` writes
(``zarr_write``) and work lost to a SIGKILL (``resume_lost_work``). The demo's end-to-end
wall time is read from a finished demo sweep's manifest (``--demo-sweep``, written by
``ungrok sweep``/``ungrok demo`` when a sweep ends), not re-run here (it takes as long as the
demo). ``--quick`` shrinks every benchmark (for a smoke
check; its figures are noisier). The table is printed and written atomically, with the date and
a machine description, to --out (default ``bench/RESULTS.md``, which the README links).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the packages, and bench/_table.py


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def machine() -> str:
    """A one-line description of this machine (cores, memory, CPU, Python, torch)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def demo_rows(sweep_dir: str | None) -> list[dict]:
    """The demo's end-to-end figures from a finished sweep's manifest (``last_run``)."""
    if not sweep_dir:
        return [{"figure": "demo end-to-end wall time", "value": "not measured here",
                 "conditions": "pass --demo-sweep DIR of a finished `ungrok demo` / demo sweep"}]
    man = json.loads((Path(sweep_dir) / "manifest.json").read_text())
    last = man.get("last_run")
    if not last:
        return [{"figure": "demo end-to-end wall time", "value": "not recorded",
                 "conditions": "its manifest has no last_run (a sweep from before it was recorded)"}]
    return [{"figure": "demo sweep wall time, stream builds + training (s)", "value": f"{last['wall_seconds']:.0f}",
             "conditions": f"the demo sweep: {last['ran']} cells run, {last.get('skipped', 0)} skipped, "
                           f"{last.get('workers', '?')} workers, efficiency {last.get('efficiency')}, "
                           f"finished {last.get('finished_utc', '?')}"}]


def run_all(quick: bool = False, demo_sweep: str | None = None) -> list[dict]:
    """Run every benchmark; rows ``{bench, figure, value, conditions, seconds}``."""
    plan = [
        ("train_throughput", dict(steps=60, warmup=10) if quick else dict(steps=300, warmup=20)),
        ("train_phases", dict(steps=200) if quick else dict(steps=1000)),
        ("grid_efficiency", dict(seeds=2, steps=100) if quick else dict(seeds=4, steps=300)),
        ("zarr_write", dict(checkpoints=8) if quick else dict(checkpoints=40)),
        ("resume_lost_work", dict(steps=300, kills=1) if quick else dict(steps=600, kills=3)),
    ]
    rows: list[dict] = []
    try:
        from rich.progress import Progress

        bar = Progress()
    except ImportError:  # pragma: no cover - rich is a dependency
        bar = None
    if bar:
        bar.start()
        task = bar.add_task("benchmarks", total=len(plan))
    try:
        for name, kw in plan:
            t = time.time()
            mod = _load(name)
            for r in getattr(mod, "measure_all", mod.measure)(**kw):  # measure_all: every setting of a bench
                rows.append({"bench": name, **r, "seconds": None})
            rows[-1]["seconds"] = round(time.time() - t, 1)
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    rows += [{"bench": "demo", **r, "seconds": None} for r in demo_rows(demo_sweep)]
    return rows


def to_markdown(rows: list[dict], when: str, where: str, quick: bool) -> str:
    lines = [f"# Benchmarks ({when}{', --quick' if quick else ''})", "", f"Machine: {where}.", "",
             "Produced by `python bench/run_all.py`; every figure was measured in that one run.", "",
             "| bench | figure | value | conditions |", "|---|---|---|---|"]
    lines += [f"| {r['bench']} | {r['figure']} | {r['value']} | {r['conditions']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    ap.add_argument("--demo-sweep", help="a finished demo sweep directory to read the demo's wall time from")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    a = ap.parse_args(argv)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = run_all(a.quick, a.demo_sweep)
    text = to_markdown(rows, when, machine(), a.quick)
    print(text)
    out = Path(a.out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
