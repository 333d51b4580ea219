"""``ungrok demo``: the embedded default, end to end, in one command.

The tour is the study in miniature on the built-in synthetic corpora: the low-support corpus
(``web``) undosed and rescued (the paper's rescue: 3 x delta symmetric rule events, token-matched), the
high-support corpus (``stories``) undosed and killed (the paper's kill at p = 1), one seed,
the demo grid's model and schedule (``examples/demo.toml``: twice the default width) for 2,500 steps (the
grid trains 3,000; the tour keeps the shorter run, ``examples/tuning/demo_wide_short.toml``'s cells), on a
local Ray started in-process (CPU). Its predictions are the paper's
claims, pre-registered and locked in ``examples/prereg_tour.toml`` (lock committed beside it);
the demo refuses to start if that lock does not verify, so the verdict it prints is scored
against thresholds fixed before the runs. Steps:

1. sweep ``examples/tour.toml`` into ``<out>/sweep`` (resumable: rerunning skips finished cells);
2. verdict of every run under the locked prereg (``<out>/verdict.json``);
3. report page ``<out>/report/index.html`` with its PNGs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOUR_GRID = EXAMPLES / "tour.toml"
TOUR_PREREG = EXAMPLES / "prereg_tour.toml"


def run_demo(out: str | Path = "runs/demo", *, num_cpus: int | None = None, progress: bool = True,
             dashboard: bool = False, reuse: list[Path] | None = None, grid: str | Path | None = None,
             prereg: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the tour, score it under the locked prereg and write the report.

    Returns ``{"sweep": <cluster.sweep_plan.SweepResult>, "verdict": <verdict dict>, "verdict_json": path,
    "report": path to index.html, "seconds": wall seconds of the whole demo}``. Raises
    ``runner.prereg.PreregError`` before anything runs if the prereg's lock does not verify.
    ``grid``/``prereg`` replace the tour's (tests run a tiny tour through the same code).
    """
    from cluster.sweep import run_sweep
    from mech.plots import report_section
    from runner._io import write_json_atomic
    from runner.analysis.prereg import load_locked
    from runner.analysis.verdicts import verdict
    from runner.report.html import write_report

    t0 = time.time()
    grid, prereg = grid or TOUR_GRID, prereg or TOUR_PREREG
    locked = load_locked(prereg)  # before any job: a broken lock stops the demo here
    out = Path(out)
    sweep_dir = out / "sweep"
    log(f"demo: {Path(grid).name} -> {sweep_dir} (prereg {Path(prereg).name}, locked {locked.locked_utc})")
    res = run_sweep(grid, sweep_dir, num_cpus=num_cpus, progress=progress, dashboard=dashboard,
                    log=log, reuse=reuse)
    if res.failed:
        return {"sweep": res, "verdict": None, "verdict_json": None, "report": None,
                "seconds": time.time() - t0}
    v = verdict(sweep_dir, locked)
    vj = out / "verdict.json"
    write_json_atomic(vj, json.loads(json.dumps(v, default=str)))
    page = write_report([sweep_dir], locked, out_dir=out / "report", extra_sections=[report_section], computed=v)
    return {"sweep": res, "verdict": v, "verdict_json": vj, "report": page, "seconds": time.time() - t0}
