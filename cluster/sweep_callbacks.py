"""Callbacks of a sweep run, called by ``cluster.sweep.run_cells`` at named lifecycle points.

Order: ``on_plan`` once; ``on_cell_failed`` for cells whose stream could not be built;
``on_cell_start`` per cell submitted to Ray (it starts when a worker is free); ``on_poll`` once
submission is done and after every wait round (about every 2 s); ``on_cell_done`` /
``on_cell_failed`` as tasks finish; ``on_stop`` always, once waiting ends (also on an error);
``on_end`` with the :class:`~cluster.sweep_plan.SweepResult` once the store is consolidated.
A callback object may define any subset of the hooks.
"""

from __future__ import annotations

from cluster.sweep_plan import Sweep, SweepPlan, SweepResult
from runner._io import utcnow


class SweepCallback:
    """Every hook, doing nothing; subclass and override what you need."""

    def on_plan(self, plan: SweepPlan) -> None: ...

    def on_cell_start(self, cell) -> None: ...

    def on_poll(self) -> None: ...

    def on_cell_done(self, cell, result: dict) -> None:
        """``result``: the task's ``{run_id, seconds, node_id, pid, ...}``."""

    def on_cell_failed(self, cell, error: str) -> None:
        """``error``: the traceback's last 4000 characters."""

    def on_stop(self) -> None: ...

    def on_end(self, result: SweepResult) -> None: ...


class CallbackList:
    """Calls a hook on every callback that has it, in order."""

    HOOKS = ("on_plan", "on_cell_start", "on_poll", "on_cell_done", "on_cell_failed", "on_stop", "on_end")

    def __init__(self, callbacks) -> None:
        self.callbacks = list(callbacks)

    def __getattr__(self, name: str):
        if name not in self.HOOKS:
            raise AttributeError(name)

        def call(*args) -> None:
            for cb in self.callbacks:
                hook = getattr(cb, name, None)
                if hook is not None:
                    hook(*args)

        return call


class ManifestWriter(SweepCallback):
    """Keeps ``<sweep>/manifest.json`` current: each cell's state as it changes (skipped, reused
    from, submitted, complete with node and seconds, failed with its traceback), and the run's
    figures as ``last_run`` at the end."""

    def __init__(self, sw: Sweep) -> None:
        self.sw = sw
        self.states: dict[str, dict] = {}

    def _set(self, run_id: str, state: dict) -> None:
        self.states[run_id] = state
        self.sw.write_manifest(self.states)

    def on_plan(self, plan: SweepPlan) -> None:
        for c in plan.skipped:
            self.states[c.run_id] = {"state": "complete", "skipped": True}
        for run_id, src in plan.reused.items():
            self.states[run_id] = {"state": "complete", "skipped": True, "reused_from": src}

    def on_cell_start(self, cell) -> None:
        self._set(cell.run_id, {"state": "submitted"})

    def on_cell_done(self, cell, result: dict) -> None:
        self._set(cell.run_id, {"state": "complete", "node_id": result["node_id"],
                                "seconds": round(result["seconds"], 2)})

    def on_cell_failed(self, cell, error: str) -> None:
        self._set(cell.run_id, {"state": "failed", "error": error})

    def on_end(self, result: SweepResult) -> None:
        self.sw.write_manifest(self.states, last_run={**result.manifest_record(), "finished_utc": utcnow("seconds")})
