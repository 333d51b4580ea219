"""The n-gram baseline in the report: ``<run>/baseline.json`` (``ungrok baseline RUN``) beside the model.

The paper's control (:mod:`runner.analysis.ngram`): a Stupid-Backoff n-gram model of the exact
stream a run saw, scored with the same battery, "cannot pass the agree control anywhere, so
surface co-occurrence does not explain the phase pattern". One row per run, n-gram order and
family: the n-gram's heldout conflict and agree accuracy, CM and agree control, and the trained
model's final conflict, agree final and label from the verdict. Runs without ``baseline.json``
are left out (the section is absent when none has one).
"""

from __future__ import annotations

import html
from pathlib import Path

from runner._io import read_json
from runner.analysis.ngram import BASELINE


def baseline_rows(run_dir: str | Path, model_families: dict | None = None) -> list[dict]:
    """Rows of one run's ``baseline.json`` (empty without one): ``run``, ``order``, ``family``,
    ``conflict``, ``agree``, ``cm``, ``control_valid`` of the n-gram model; ``model_*`` from
    ``model_families`` (the run verdict's ``families``) when given."""
    path = Path(run_dir) / BASELINE
    if not path.exists():
        return []
    b = read_json(path)
    rows = []
    for order in sorted((k for k in b if k.startswith("order") and k[5:].isdigit()), key=lambda k: int(k[5:])):
        figs = b[order]
        for fam, ok in sorted(figs.get("control_valid", {}).items()):
            m = (model_families or {}).get(fam, {})
            rows.append({"run": Path(run_dir).name, "order": int(order[5:]), "family": fam,
                         "conflict": figs.get(f"{fam}/acc_conflict_heldout"),
                         "agree": figs.get(f"{fam}/acc_agree_heldout"), "cm": figs.get(f"{fam}/cm"),
                         "control_valid": bool(ok), "model_label": m.get("label"),
                         "model_final": m.get("final"), "model_agree_final": m.get("agree_final")})
    return rows


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def baseline_section(run_dirs, runs: list[dict]) -> list[str]:
    """The report's n-gram baseline table over ``run_dirs`` (``runs``: the verdict's runs, for the
    model's own figures); [] when no run has a ``baseline.json``."""
    fams = {r["run"]: r.get("families", {}) for r in runs}
    rows = [row for d in run_dirs for row in baseline_rows(d, fams.get(Path(d).name))]
    if not rows:
        return []
    body = "".join(
        f"<tr><td class=l>{html.escape(r['run'])}</td><td>{r['order']}</td><td class=l>{html.escape(r['family'])}</td>"
        f"<td>{_f(r['conflict'])}</td><td>{_f(r['agree'])}</td><td>{_f(r['cm'])}</td>"
        f"<td>{'valid' if r['control_valid'] else 'INVALID'}</td><td class={_f(r['model_label'])}>"
        f"{_f(r['model_label'])}</td><td>{_f(r['model_final'])}</td><td>{_f(r['model_agree_final'])}</td></tr>"
        for r in rows)
    return ["<h2>N-gram baseline</h2><p>Stupid-Backoff n-gram models (α = 0.4) of the exact stream each run saw, "
            "scored with the same battery (heldout; <code>ungrok baseline RUN</code> writes "
            f"<code>{BASELINE}</code>). The paper: it cannot pass the agree control anywhere.</p>"
            "<table><tr><th class=l>run</th><th>order</th><th class=l>family</th><th>n-gram conflict</th>"
            "<th>n-gram agree</th><th>n-gram CM</th><th>n-gram agree control</th><th class=l>model label</th>"
            f"<th>model final</th><th>model agree final</th></tr>{body}</table>"]
