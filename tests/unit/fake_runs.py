"""Run folders with a hand-made trajectory (no training): a real store, config.json and run.json.

``make_run(root, name, conflict)`` writes ``root/name`` whose heldout conflict accuracy follows
``conflict`` (one value per checkpoint, steps 0, 50, 100, ...); agree items are always right, so
the control is valid. The per-item log-prob difference is +1 for a right item and -1 for a wrong
one, so CM = 2 x accuracy - 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runner.scoring import aggregate
from runner.store import RunStore
from runner.world.rules import RULES
from tests.helpers import tiny_run_config


def make_run(root: Path, name: str, conflict, *, seed: int = 7, corpus_path: Path | None = None,
             family: str = "pronoun_gender", every: int = 50, first_scored_utc: str | None = None) -> Path:
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    items = RULES.get(family).battery(8, 4)
    cond = np.array([it.condition for it in items])
    split = np.array([it.split for it in items])
    store = RunStore(run_dir / "store.zarr")
    names = sorted(aggregate(items, np.zeros(len(items)), np.zeros(len(items))))
    store.init_layout(items, names, {"run_id": name})
    for i, acc in enumerate(conflict):
        diff = np.ones(len(items))
        for sp in ("train", "heldout"):
            idx = np.nonzero((cond == "conflict") & (split == sp))[0]
            diff[idx[int(round(acc * len(idx))):]] = -1.0
        lpc, lpd = diff / 2, -diff / 2
        store.append(i * every, 1.0, 1e-3, items, lpc, lpd, aggregate(items, lpc, lpd))
    if first_scored_utc is not None:
        store.set_attr("first_scored_utc", first_scored_utc)
    store.mark_complete()
    cfg = tiny_run_config(train={"seed": seed}, probes={"families": (family,)})
    (run_dir / "config.json").write_text(cfg.model_dump_json())
    meta = {"run_id": name, **({"corpus_path": str(corpus_path)} if corpus_path else {})}
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


def rise_then(final: float, n: int = 21) -> list[float]:
    """Conflict accuracy that climbs to 1.0 by the 6th checkpoint and then settles at ``final``."""
    up = [0.5, 0.6, 0.8, 0.95, 1.0, 1.0]
    return up + [1.0 + (final - 1.0) * min(1.0, (i + 1) / 5) for i in range(n - len(up))]
