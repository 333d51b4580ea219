"""A sweep as a table: per-cell state, step and label so far (safe while it runs), and the live
table a sweep shows while it waits (a callback)."""

from __future__ import annotations

import time
from pathlib import Path

from cluster.sweep_callbacks import SweepCallback
from cluster.sweep_plan import Sweep


def sweep_status(sweep_dir: str | Path) -> list[dict]:
    """One row per cell: label, run id, state, last scored step, label so far (safe while running)."""
    from runner.store import RunStore
    from runner.trajectory import figures_from_store

    sw = Sweep(sweep_dir)
    man = {c["run_id"]: c for c in sw.manifest().get("cells", [])}
    fam = sw.cells[0].config.probes.families[0] if sw.cells else None
    rows = []
    for c in sw.cells:
        m = man.get(c.run_id, {})
        row = {"cell": c.label, "run_id": c.run_id, "state": m.get("state", "pending"), "step": None, "label": None,
               "steps": c.config.train.steps, "error": (m.get("error") or "").strip().splitlines()[-1:] or None}
        if (sw.store_path / "runs" / c.run_id / "zarr.json").exists():
            st = RunStore(sw.store_path, f"runs/{c.run_id}")
            if st.n_complete:
                steps = st.steps()
                row["step"] = int(steps[-1])
                row["label"] = figures_from_store(st, fam).get("label")
                if st.attrs.get("complete"):
                    row["state"] = "complete"
                elif row["state"] in ("submitted", "pending"):
                    row["state"] = "running"  # has data but is not complete (or a driver died)
        rows.append(row)
    return rows


def status_table(sweep_dir: str | Path):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"sweep {sweep_dir}")
    for col in ("cell", "state", "step", "label", "run id"):
        t.add_column(col)
    for r in sweep_status(sweep_dir):
        step = f"{r['step']}/{r['steps']}" if r["step"] is not None else f"-/{r['steps']}"
        state = r["state"] + (f": {r['error'][0][:60]}" if r["state"] == "failed" and r["error"] else "")
        # labels like synthetic[support=0.3] are text, not rich markup
        t.add_row(escape(r["cell"]), escape(state), step, str(r["label"] or "-"), r["run_id"])
    return t


class LiveTable(SweepCallback):
    """The status table, live in the terminal while the sweep waits (redrawn at most every 2 s)."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.dir = Path(sweep_dir)
        self.live = None
        self._last = 0.0

    def on_poll(self) -> None:
        if self.live is None:
            from rich.live import Live

            self.live = Live(status_table(self.dir), refresh_per_second=1)
            self.live.start()
        elif time.time() - self._last > 2:
            self.live.update(status_table(self.dir))
            self._last = time.time()

    def on_stop(self) -> None:
        if self.live is not None:
            self.live.update(status_table(self.dir))
            self.live.stop()
            self.live = None


class ProgressLines(SweepCallback):
    """The live table's plain-text twin for a log (stdout not a terminal): per cell, a line when
    it is submitted, every N steps or 30 s while it trains (its last scored step, steps/s, ETA)
    and when it ends (see :mod:`runner._progress`). Read from the store by the driver, so it
    needs no worker output (Ray runs with ``log_to_driver=False``)."""

    def __init__(self, sweep_dir: str | Path, log=print, every: int | None = None,
                 seconds: float | None = None, poll_seconds: float = 5.0) -> None:
        self.dir, self.log, self.every, self.seconds = Path(sweep_dir), log, every, seconds
        self.poll_seconds, self._last = poll_seconds, 0.0
        self.tickers: dict = {}  # run_id -> Ticker, for cells submitted by this driver
        self.started: set = set()  # cells seen training: their rate counts from then, not from submission

    def on_cell_start(self, cell) -> None:
        from runner._progress import Ticker

        steps = cell.config.train.steps
        self.tickers[cell.run_id] = t = Ticker(f"cell {cell.label}", steps, every=self.every,
                                               seconds=self.seconds, log=self.log)
        t.update(0, "submitted", force=True)

    def on_poll(self) -> None:
        if not self.tickers or time.time() - self._last < self.poll_seconds:
            return
        self._last = time.time()
        for r in sweep_status(self.dir):
            t = self.tickers.get(r["run_id"])
            if t is not None and r["step"] is not None and r["state"] != "complete":
                if r["run_id"] not in self.started:  # first sight of it training: rate from here
                    self.started.add(r["run_id"])
                    t.rebase(r["step"])
                t.update(r["step"], f"label {r['label']}" if r["label"] else "")

    def on_cell_done(self, cell, result: dict) -> None:
        t = self.tickers.pop(cell.run_id, None)
        if t is not None:
            t.done_line(info=f"complete (node {str(result.get('node_id', '?'))[:8]})")

    def on_cell_failed(self, cell, error: str) -> None:
        from runner._progress import PREFIX

        self.tickers.pop(cell.run_id, None)
        last = (error or "").strip().splitlines()[-1:] or ["?"]
        self.log(f"{PREFIX} cell {cell.label}: failed: {last[0][:120]}")
