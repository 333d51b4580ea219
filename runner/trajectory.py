"""Trajectory figures of a run, per rule family: peak, final, collapse onset, CM zero-crossing.

The constants are the paper's registered classifier (``Classifier`` defaults); the
pre-registration layer may lock other values, and everything here takes them as an argument.

Definitions (conflict = heldout conflict accuracy, smoothed by a rolling mean over
``window`` evals; only evals at step >= ``start_step`` count):
- peak: max smoothed conflict, and its step. EMERGED iff peak >= ``emerged``.
- final: mean of the raw conflict values in the last ``final_frac`` of evals (at least
  ``final_min`` evals); final_range = max - min over that window.
- label: never (not emerged) / unstable (final_range > ``unstable_range``) / recovered
  (final >= ``recovered``) / displaced (final <= ``displaced``) / intermediate.
- control_valid: agree final >= ``control_final`` and agree max - agree final < ``control_drop``.
- onset: the last step with smoothed conflict >= 0.5 (only for emerged runs that end below 0.5).
- cm_cross: the first step after the peak at which smoothed CM goes from >= 0 to < 0 and
  stays < 0 through the end; lag = cm_cross - onset.
- margin_valid: max smoothed CM >= ``margin_min`` nats at step >= ``start_step``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runner._io import write_json_atomic
from runner.store import RunStore, open_run_store


@dataclass(frozen=True)
class Classifier:
    window: int = 3
    start_step: int = 100
    emerged: float = 0.8
    final_frac: float = 0.1
    final_min: int = 3
    recovered: float = 0.8
    displaced: float = 0.6
    unstable_range: float = 0.2
    control_final: float = 0.8
    control_drop: float = 0.15
    margin_min: float = 0.5
    onset_level: float = 0.5


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing rolling mean (the first values average what exists so far)."""
    c = np.cumsum(np.insert(np.asarray(x, float), 0, 0.0))
    out = np.empty(len(x))
    for i in range(len(x)):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def _final(x: np.ndarray, k: Classifier) -> tuple[float, float]:
    n = max(k.final_min, int(math.ceil(k.final_frac * len(x))))
    w = x[-n:]
    return float(w.mean()), float(w.max() - w.min())


def family_figures(steps: np.ndarray, conflict: np.ndarray, agree: np.ndarray, cm: np.ndarray,
                   k: Classifier = Classifier()) -> dict:
    """All figures for one family's trajectory (arrays aligned on ``steps``)."""
    keep = steps >= k.start_step
    s, c, a, m = steps[keep], conflict[keep], agree[keep], cm[keep]
    if len(s) < k.final_min:
        return {"label": "incomplete", "n_evals": int(len(s))}
    cs, ms = smooth(c, k.window), smooth(m, k.window)
    ipk = int(np.argmax(cs))
    final, frange = _final(c, k)
    a_final, _ = _final(a, k)
    emerged = bool(cs[ipk] >= k.emerged)
    if not emerged:
        label = "never"
    elif frange > k.unstable_range:
        label = "unstable"
    elif final >= k.recovered:
        label = "recovered"
    elif final <= k.displaced:
        label = "displaced"
    else:
        label = "intermediate"
    onset = None
    if emerged and cs[-1] < k.onset_level:
        onset = int(s[np.nonzero(cs >= k.onset_level)[0].max()])
    cross = None
    neg = ms < 0
    for i in range(max(ipk, 1), len(s)):
        if neg[i] and not neg[i - 1] and neg[i:].all():
            cross = int(s[i])
            break
    return {
        "label": label,
        "emerged": emerged,
        "peak": float(cs[ipk]),
        "peak_step": int(s[ipk]),
        "final": final,
        "final_range": frange,
        "agree_final": a_final,
        "control_valid": bool(a_final >= k.control_final and (a.max() - a_final) < k.control_drop),
        "onset": onset,
        "cm_peak": float(ms.max()),
        "cm_final": _final(m, k)[0],
        "cm_cross": cross,
        "cross_lag": (cross - onset) if (cross is not None and onset is not None) else None,
        "abs_cross_lag": abs(cross - onset) if (cross is not None and onset is not None) else None,
        "margin_valid": bool(ms.max() >= k.margin_min),
        "n_evals": int(len(s)),
    }


def figures_from_store(store: RunStore, family: str, k: Classifier = Classifier()) -> dict:
    """:func:`family_figures` of one family's stored trajectory (heldout conflict and agree
    accuracy, CM); the one place that reads these series for the classifier."""
    return family_figures(store.series(f"{family}/step"), store.series(f"{family}/acc_conflict_heldout"),
                          store.series(f"{family}/acc_agree_heldout"), store.series(f"{family}/cm"), k)


def run_figures(store: RunStore, k: Classifier = Classifier()) -> dict:
    """``{family: figures}`` from a run's store (heldout split)."""
    return {fam: figures_from_store(store, fam, k) for fam in store.families()}


def write_summary(run_dir: str | Path, k: Classifier = Classifier()) -> dict:
    run_dir = Path(run_dir)
    store = open_run_store(run_dir)
    summary = {
        "run_id": store.attrs.get("run_id"),
        "complete": bool(store.attrs.get("complete")),
        "last_step": int(store.steps()[-1]) if store.n_complete else None,
        "classifier": asdict(k),
        "families": run_figures(store, k),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
