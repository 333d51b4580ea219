"""What a person looks at for one run: a trajectory table (rich) and a PNG plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.store import open_run_store


def trajectory_table(run_dir: str | Path, every: int = 1):
    """A rich Table: step, loss, and per family conflict/agree accuracy and CM."""
    from rich.table import Table

    store = open_run_store(run_dir)
    fams = store.families()
    t = Table(title=str(store.attrs.get("run_id")))
    t.add_column("step", justify="right")
    t.add_column("loss", justify="right")
    for fam in fams:
        for col in ("conflict", "agree", "CM"):
            t.add_column(f"{fam}\n{col}", justify="right")
    steps = store.steps()
    loss = store.series("train/loss")
    cols = {fam: (store.series(f"{fam}/acc_conflict_heldout"), store.series(f"{fam}/acc_agree_heldout"),
                  store.series(f"{fam}/cm")) for fam in fams}
    for i in range(0, len(steps), every):
        row = [str(int(steps[i])), "" if np.isnan(loss[i]) else f"{loss[i]:.3f}"]
        for fam in fams:
            c, a, m = cols[fam]
            row += [f"{c[i]:.2f}", f"{a[i]:.2f}", f"{m[i]:+.2f}"]
        t.add_row(*row)
    return t


def _family_table(title: str, keys: list[str], per_family: dict[str, dict]):
    """A rich Table: one row per family, one right-aligned column per key of its figures."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("family")
    for k in keys:
        t.add_column(k, justify="right")
    for fam, f in per_family.items():
        t.add_row(fam, *[_fmt(f.get(k)) for k in keys])
    return t


def figures_table(summary: dict):
    keys = ["label", "peak", "peak_step", "final", "agree_final", "control_valid", "onset", "cm_cross",
            "cross_lag", "cm_final", "margin_valid"]
    return _family_table("figures (heldout; classifier constants in summary.json)", keys, summary["families"])


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def baseline_table(run_dir: str | Path, summary: dict | None = None):
    """A rich Table of the run's n-gram baseline (``baseline.json``, :mod:`runner.report.baseline`)
    beside the model's own figures from ``summary``; None when the run has no baseline.json."""
    from rich.table import Table

    from runner.report.baseline import BASELINE, baseline_rows

    rows = baseline_rows(run_dir, (summary or {}).get("families"))
    if not rows:
        return None
    t = Table(title=f"n-gram baseline ({BASELINE}; heldout): the same battery on the stream the run saw")
    keys = ["order", "family", "conflict", "agree", "cm", "control_valid", "model_label", "model_final",
            "model_agree_final"]
    for k in keys:
        t.add_column(k.replace("_", " "), justify="left" if k in ("family", "model_label") else "right")
    for r in rows:
        t.add_row(*[_fmt(r[k]) for k in keys])
    return t


def window_table(summary: dict):
    """A rich Table of the window figures of a run dosed inside a window of steps
    (:func:`runner.trajectory.window_figures`); None for any other run."""
    w = summary.get("window")
    if not w:
        return None
    end = "end" if w["end_step"] is None else w["end_step"]
    return _family_table(f"dose window, steps {w['start_step']}-{end} (smoothed heldout conflict; descriptive)",
                         ["conflict_before", "conflict_mean", "conflict_min", "conflict_end", "cm_end"],
                         w["families"])
