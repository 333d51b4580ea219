"""Runs dosed inside a window of steps in the report: did the rule hold while the dose flowed?

The paper's timing amendment delivers a rescue's whole dose in steps 0-2,400 (early) or
2,800-4,400 (late) and reports that "one early seed held the rule while the dose flowed and lost
it after". One row per windowed run and family: the window, the smoothed heldout conflict
accuracy before it, its mean and minimum inside it, at its last evaluation, the smoothed CM
there (:func:`runner.trajectory.window_figures`), and the run's label and final from the
verdict. The section is absent when no run has a window.
"""

from __future__ import annotations

import html
from pathlib import Path

from runner.store import open_run_store
from runner.trajectory import Classifier, config_data, dose_window, window_figures


def window_rows(run_dir: str | Path, model_families: dict | None = None, k: Classifier = Classifier()) -> list[dict]:
    """Rows of one run (empty unless it was dosed inside a window), one per family."""
    cfg = config_data(run_dir)
    if dose_window(cfg) is None:
        return []
    w = window_figures(open_run_store(run_dir), cfg, k)
    if w is None:
        return []
    return [{"run": Path(run_dir).name, "dose": cfg.get("dose"), "start_step": w["start_step"],
             "end_step": w["end_step"], "family": fam, **f,
             "label": (model_families or {}).get(fam, {}).get("label"),
             "final": (model_families or {}).get(fam, {}).get("final")}
            for fam, f in w["families"].items()]


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else html.escape(str(v)))


def window_section(run_dirs: list[Path], verdict_runs: list[dict]) -> list[str]:
    """The report's HTML for the windowed runs among ``run_dirs`` (``verdict_runs``: the verdict's
    rows, for labels and finals); [] when none has a window."""
    fams = {r["run"]: r.get("families", {}) for r in verdict_runs}
    rows = [row for d in run_dirs for row in window_rows(d, fams.get(Path(d).name))]
    if not rows:
        return []
    keys = ("conflict_before", "conflict_mean", "conflict_min", "conflict_end", "cm_end", "final")
    body = "".join(
        f"<tr><td class=l>{_fmt(r['run'])}</td><td class=l>{_fmt(r['dose'])}</td>"
        f"<td>{r['start_step']}–{'end' if r['end_step'] is None else r['end_step']}</td>"
        f"<td class=l>{_fmt(r['family'])}</td>" + "".join(f"<td>{_fmt(r[k])}</td>" for k in keys)
        + f"<td class={_fmt(r['label'])}>{_fmt(r['label'])}</td></tr>" for r in rows)
    head = "".join(f"<th>{k}</th>" for k in keys)
    return ["<h2>Dose windows: did the rule hold while the dose flowed?</h2><p>Smoothed heldout conflict "
            "accuracy before the window, inside it (mean, minimum) and at its last evaluation; smoothed CM "
            "there; the run's final and label. Descriptive: no prediction reads these.</p>"
            "<table><tr><th class=l>run</th><th class=l>dose</th><th>window</th><th class=l>family</th>"
            f"{head}<th>label</th></tr>{body}</table>"]
