"""Trajectory figures of a run, per rule family: label, peak, final, collapse onset, CM zero crossing.

By default these are the paper's registered classifier, operators and constants exactly as its
frozen code computes them (``../shared/reference/PAPER.md``, "Registered classifier"; checked line
by line against ``classifier_golden.jsonl``). ``Classifier`` holds the constants; the
pre-registration layer may lock other values, and everything here takes them as an argument.

Definitions (``operators = "paper"``, the default). conflict / agree = heldout forced-choice
accuracy, CM = contrast margin (nats), one value per eval:

- smoothing: centred rolling mean of ``window`` evals (i-1..i+1 for 3), shrinking at both ends.
- conflict and agree: evals at step < ``start_step`` are dropped, then smoothed.
- n = max(``final_min``, round(``final_frac`` x evals)) with Python's round (half to even).
- final (``conflict_final``) = mean of the last n smoothed conflict values; final_range = max - min
  of those n values. peak = max smoothed conflict (its first step: ``peak_step``).
  EMERGED iff peak >= ``emerged``.
- label, tested in this order: UNSTABLE if final_range >= ``unstable_range``; RECOVERED if final >=
  ``recovered``; DISPLACED if emerged and final <= ``displaced``; PARTIAL if emerged; else NEVER.
  INCOMPLETE (ungrok's, not the paper's) when fewer than ``final_min`` evals are at step >= start.
- control_valid: agree final (last n smoothed) >= ``control_final`` and smoothed agree max - agree
  final < ``control_drop``.
- onset: the last step (>= start) with smoothed conflict >= ``onset_level``; None if there is none.
- CM is smoothed over **all** evals (step 0 included). margin_valid (``cm_valid``): max smoothed
  CM over steps >= start >= ``margin_min``. cm_final = mean of the last max(``final_min``,
  floor(``final_frac`` x N)) smoothed CM values, N = all evals (N // 10 for the paper).
  cm_cross = the last step (any step) whose smoothed CM >= 0; None if there is none.
- timing (M4b): the crossing is within [``timing_lo`` x, ``timing_hi`` x] of the onset
  (:func:`crossing_within`): ``cross_timing_ok``; cross_lag = cm_cross - onset.

``operators = "ungrok-0.1"`` is ungrok's earlier reading, kept only as a named option for
comparisons, never the default: trailing smoothing; final, final_range, agree final and agree max
on raw values with n = max(final_min, ceil(final_frac x evals)); NEVER tested first and UNSTABLE
with ``>``; onset only for emerged runs that end below ``onset_level``; CM smoothed over steps >=
start only, cm_final on raw CM; cm_cross = the first step after the peak at which smoothed CM
turns negative and stays negative through the end. Labels are the same words in both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from runner._io import read_json, write_json_atomic
from runner.store import RunDir, RunStore, open_run_store

PAPER = "paper"
UNGROK_0_1 = "ungrok-0.1"
OPERATORS = (PAPER, UNGROK_0_1)

RECOVERED, DISPLACED, PARTIAL, NEVER, UNSTABLE = "RECOVERED", "DISPLACED", "PARTIAL", "NEVER", "UNSTABLE"
INCOMPLETE = "INCOMPLETE"
LABELS = (RECOVERED, DISPLACED, PARTIAL, NEVER, UNSTABLE)


@dataclass(frozen=True)
class Classifier:
    """The registered classifier's constants (the paper's by default) and which operators apply."""

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
    timing_lo: float = 0.5
    timing_hi: float = 2.0
    operators: str = PAPER

    def __post_init__(self) -> None:
        if self.operators not in OPERATORS:
            raise ValueError(f"classifier operators {self.operators!r} unknown; use one of {', '.join(OPERATORS)} "
                             f"({PAPER!r} is the paper's frozen code)")
        for name in ("window", "final_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not float(v).is_integer() or v < 1:
                raise ValueError(f"classifier {name} must be a whole number >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not 0 < self.final_frac <= 1:
            raise ValueError(f"classifier final_frac must be in (0, 1], got {self.final_frac!r}")
        if not 0 < self.timing_lo <= self.timing_hi:
            raise ValueError(f"classifier timing window needs 0 < timing_lo <= timing_hi, "
                             f"got {self.timing_lo!r}, {self.timing_hi!r}")


def smooth(x: np.ndarray, window: int = 3, centred: bool = True) -> np.ndarray:
    """Rolling mean of ``window`` values that shrinks at the ends, along the last axis (a series,
    or a stack of them: a bootstrap's rows). ``centred`` (the paper's): the window around i
    (i-1..i+1 for 3; for an even window one more value before i, as pandas'
    ``rolling(center=True)``); else trailing (i-window+1..i).

    Every value is ``numpy.mean`` of its own window, as one loop over i would take it: the full
    windows at once through a strided view of a C-ordered array (numpy then reduces each window
    as it reduces a lone one; over another memory order it may sum in another order), the
    shrunken ones at the ends one by one; tests check it against the loop bit for bit."""
    x = np.ascontiguousarray(x, float)
    n = x.shape[-1]
    out = np.empty(x.shape)
    ahead = (window - 1) // 2 if centred else 0
    lo, hi = window - 1 - ahead, n - 1 - ahead  # positions whose window is whole
    if n >= window:
        out[..., lo: hi + 1] = sliding_window_view(x, window, axis=-1).mean(axis=-1)
    for i in range(n):
        if n < window or not lo <= i <= hi:
            end = i + ahead + 1
            out[..., i] = x[..., max(0, end - window):end].mean(axis=-1)
    return out


def smoothed(x: np.ndarray, k: Classifier) -> np.ndarray:
    """``x`` smoothed as ``k``'s operators smooth: centred (paper) or trailing (``ungrok-0.1``)."""
    return smooth(x, k.window, centred=k.operators != UNGROK_0_1)


def n_final(n_evals: int, k: Classifier) -> int:
    """How many trailing evals make the final window (conflict and agree)."""
    if k.operators == UNGROK_0_1:
        return max(k.final_min, int(math.ceil(k.final_frac * n_evals)))
    return max(k.final_min, int(round(k.final_frac * n_evals)))


def _final(x: np.ndarray, k: Classifier) -> tuple[float, float]:
    """(mean, max - min) of the last :func:`n_final` values of ``x`` (as given: raw or smoothed)."""
    w = np.asarray(x, float)[-n_final(len(x), k):]
    return float(w.mean()), float(w.max() - w.min())


def _mean_last(x: np.ndarray, n: int):
    """Mean of the last ``n`` values along the last axis: a float for one series, one per row of a
    stack (``x`` C-ordered: each row's mean is then summed as that row's alone would be)."""
    w = x[..., -n:].mean(axis=-1)
    return float(w) if w.ndim == 0 else w


def final_of(x: np.ndarray, k: Classifier):
    """The final of an accuracy series already restricted to steps >= start (what ``final``
    reports for conflict): over smoothed values for the paper, raw ones for ``ungrok-0.1``.
    A float for one series; for a stack of series (last axis: evals) one final per series."""
    x = np.ascontiguousarray(x, float)
    return _mean_last(x if k.operators == UNGROK_0_1 else smoothed(x, k), n_final(x.shape[-1], k))


def cm_final_of(steps: np.ndarray, cm: np.ndarray, k: Classifier):
    """CM final of a whole CM series (all evals): the mean of the last max(final_min,
    floor(final_frac x N)) smoothed values (paper), or of the raw values at steps >= start
    (``ungrok-0.1``). A float for one series, one per series for a stack (last axis: evals)."""
    cm = np.ascontiguousarray(cm, float)
    if k.operators == UNGROK_0_1:
        return final_of(cm[..., np.asarray(steps) >= k.start_step], k)  # final_of re-orders the copy
    n = max(k.final_min, int(math.floor(k.final_frac * cm.shape[-1] + 1e-9)))
    return _mean_last(smoothed(cm, k), n)


def crossing_within(cross: int | None, onset: int | None, lo: float = 0.5, hi: float = 2.0) -> bool | None:
    """The registered timing test (M4b): is the CM crossing within [lo x, hi x] of the collapse
    onset (lo x onset <= cross <= hi x onset)? None when either step is undefined or onset <= 0."""
    if cross is None or onset is None or onset <= 0:
        return None
    return bool(lo * onset <= cross <= hi * onset)


def label_of(final: float, final_range: float, emerged: bool, k: Classifier) -> str:
    """The label from the final, the final window's range and EMERGED, in the operators' order."""
    if k.operators == UNGROK_0_1:
        if not emerged:
            return NEVER
        if final_range > k.unstable_range:
            return UNSTABLE
    elif final_range >= k.unstable_range:
        return UNSTABLE
    if final >= k.recovered:
        return RECOVERED
    if emerged and final <= k.displaced:
        return DISPLACED
    return PARTIAL if emerged else NEVER


def _accuracy_figures(s: np.ndarray, c: np.ndarray, a: np.ndarray, k: Classifier) -> dict:
    """Label, peak, final, control and onset from conflict ``c`` and agree ``a`` at steps ``s``
    (already restricted to steps >= start)."""
    legacy = k.operators == UNGROK_0_1
    cs, as_ = smoothed(c, k), smoothed(a, k)
    ipk = int(np.argmax(cs))
    final, frange = _final(c if legacy else cs, k)
    a_final = _final(a if legacy else as_, k)[0]
    a_max = float((a if legacy else as_).max())
    emerged = bool(cs[ipk] >= k.emerged)
    hit = np.nonzero(cs >= k.onset_level)[0]
    onset = int(s[hit.max()]) if len(hit) else None
    if legacy and not (emerged and cs[-1] < k.onset_level):
        onset = None
    return {
        "label": label_of(final, frange, emerged, k),
        "emerged": emerged,
        "peak": float(cs[ipk]),
        "peak_step": int(s[ipk]),
        "final": final,
        "conflict_final": final,
        "final_range": frange,
        "agree_final": a_final,
        "agree_max": a_max,
        "control_valid": bool(a_final >= k.control_final and (a_max - a_final) < k.control_drop),
        "onset": onset,
    }


def _cm_figures(steps: np.ndarray, cm: np.ndarray, peak_step: int, k: Classifier) -> dict:
    """CM peak, final, crossing and the margin instrument gate from the whole CM series."""
    keep = steps >= k.start_step
    if k.operators == UNGROK_0_1:
        s, ms = steps[keep], smoothed(cm[keep], k)
        neg, cross = ms < 0, None
        for i in range(max(int(np.searchsorted(s, peak_step)), 1), len(s)):
            if neg[i] and not neg[i - 1] and neg[i:].all():
                cross = int(s[i])
                break
        cm_peak = float(ms.max())
    else:
        ms = smoothed(cm, k)
        hit = np.nonzero(ms >= 0)[0]
        cross = int(steps[hit.max()]) if len(hit) else None
        cm_peak = float(ms[keep].max())
    valid = bool(cm_peak >= k.margin_min)
    return {"cm_peak": cm_peak, "cm_final": cm_final_of(steps, cm, k), "cm_cross": cross,
            "margin_valid": valid, "cm_valid": valid}


def _no_cm() -> dict:
    return {"cm_peak": None, "cm_final": None, "cm_cross": None, "margin_valid": False, "cm_valid": None}


def _timing(cross: int | None, onset: int | None, k: Classifier) -> dict:
    """cross_lag = cm_cross - onset, its absolute value, cm_cross / onset and the M4b test."""
    lag = None if cross is None or onset is None else cross - onset
    return {
        "cross_lag": lag,
        "abs_cross_lag": None if lag is None else abs(lag),
        "cross_onset_ratio": cross / onset if cross is not None and onset else None,
        "cross_timing_ok": crossing_within(cross, onset, k.timing_lo, k.timing_hi),
    }


def family_figures(steps: np.ndarray, conflict: np.ndarray, agree: np.ndarray, cm: np.ndarray | None = None,
                   k: Classifier = Classifier()) -> dict:
    """All figures for one family's trajectory (arrays aligned on ``steps``; ``cm`` optional:
    without it the CM figures are None and the margin instrument is not valid)."""
    steps, conflict, agree = np.asarray(steps), np.asarray(conflict, float), np.asarray(agree, float)
    keep = steps >= k.start_step
    s = steps[keep]
    if len(s) < k.final_min:
        return {"label": INCOMPLETE, "n_evals": int(len(s))}
    out = _accuracy_figures(s, conflict[keep], agree[keep], k)
    out.update(_no_cm() if cm is None else _cm_figures(steps, np.asarray(cm, float), out["peak_step"], k))
    out.update(_timing(out["cm_cross"], out["onset"], k))
    out.update(_noise(steps, None if cm is None else np.asarray(cm, float), out["cm_cross"], out["onset"]))
    out["n_evals"] = int(len(s))
    return out


def _noise(steps: np.ndarray, cm: np.ndarray | None, cross: int | None, onset: int | None) -> dict:
    """Descriptive, not in any verdict: ``cm_noise`` = median |CM[i+1] - CM[i]| over adjacent raw
    evaluations after the crossing (None without a crossing or with fewer than two evaluations
    after it), the checkpoint-to-checkpoint jitter of the margin once the rule has been displaced;
    ``cross_lag_evals`` = (cm_cross - onset) in evaluation intervals (median step spacing)."""
    lag = None
    if cross is not None and onset is not None and len(steps) > 1:
        lag = float((cross - onset) / np.median(np.diff(steps)))
    if cm is None or cross is None:
        return {"cm_noise": None, "cross_lag_evals": lag}
    after = cm[steps > cross]
    noise = float(np.median(np.abs(np.diff(after)))) if len(after) >= 2 else None
    return {"cm_noise": noise, "cross_lag_evals": lag}


def figures_from_store(store: RunStore, family: str, k: Classifier = Classifier()) -> dict:
    """:func:`family_figures` of one family's stored trajectory (heldout conflict and agree
    accuracy, CM); the one place that reads these series for the classifier."""
    return family_figures(store.series(f"{family}/step"), store.series(f"{family}/acc_conflict_heldout"),
                          store.series(f"{family}/acc_agree_heldout"), store.series(f"{family}/cm"), k)


def run_figures(store: RunStore, k: Classifier = Classifier()) -> dict:
    """``{family: figures}`` from a run's store (heldout split)."""
    return {fam: figures_from_store(store, fam, k) for fam in store.families()}


def write_summary(run_dir: str | Path, k: Classifier = Classifier()) -> dict:
    """Write (atomically) and return a run's ``summary.json``: its figures per family under ``k``."""
    summary = summary_of(run_dir, k)
    write_json_atomic(RunDir(run_dir).summary, summary)  # <run>/rescore/<name>/ in a battery view
    return summary


def summary_of(run_dir: str | Path, k: Classifier = Classifier()) -> dict:
    """What :func:`write_summary` writes, computed only (nothing is written: a read-only run works)."""
    store = open_run_store(run_dir)
    return {
        "run_id": store.attrs.get("run_id"),
        "complete": bool(store.attrs.get("complete")),
        "last_step": int(store.steps()[-1]) if store.n_complete else None,
        "classifier": asdict(k),
        "families": run_figures(store, k),
        "window": window_figures(store, config_data(run_dir), k),
    }


def config_data(run_dir: str | Path) -> dict:
    """A run's ``config.json`` as JSON ({} for a folder without one, e.g. a public series)."""
    path = RunDir(run_dir).config
    return read_json(path) if path.exists() else {}


def dose_window(cfg: dict) -> tuple[int, int | None] | None:
    """(start_step, end_step or None) of a run config (as JSON) dosed inside a window of steps;
    None for an undosed run or a dose over the whole run."""
    iv = cfg.get("intervention") or {}
    start, end = int(iv.get("start_step") or 0), iv.get("end_step")
    if cfg.get("dose", "none") == "none" or (start == 0 and end is None):
        return None
    return start, None if end is None else int(end)


def window_figures(store: RunStore, cfg: dict, k: Classifier = Classifier()) -> dict | None:
    """Descriptive, not in any verdict: did the rule hold while a windowed dose flowed?

    For a run dosed inside a window of steps [start, end) (``intervention.start_step`` /
    ``end_step``; the paper's timing amendment: "one early seed held the rule while the dose
    flowed and lost it after"), per family, from the smoothed heldout conflict accuracy (``k``'s
    smoothing, evals at step < ``k.start_step`` dropped, as the classifier does) and the smoothed
    CM: ``conflict_before`` (the last eval before the window; None when it opens at the start),
    ``conflict_mean`` and ``conflict_min`` over the evals inside it, ``conflict_end`` and
    ``cm_end`` at its last eval. None for an undosed run or a dose over the whole run."""
    window = dose_window(cfg)
    if window is None or not store.n_complete:
        return None
    start, end = window
    out: dict = {"start_step": start, "end_step": end, "families": {}}

    def inside_window(x: np.ndarray) -> np.ndarray:
        return (x >= start) & (x < (end if end is not None else np.inf))

    for fam in store.families():
        steps = store.series(f"{fam}/step")
        keep = steps >= k.start_step
        s, conf = steps[keep], smoothed(store.series(f"{fam}/acc_conflict_heldout")[keep].astype(float), k)
        cm = smoothed(store.series(f"{fam}/cm").astype(float), k)
        inside, before, cm_in = inside_window(s), s < start, np.nonzero(inside_window(steps))[0]
        out["families"][fam] = {
            "conflict_before": float(conf[before][-1]) if before.any() else None,
            "conflict_mean": float(conf[inside].mean()) if inside.any() else None,
            "conflict_min": float(conf[inside].min()) if inside.any() else None,
            "conflict_end": float(conf[inside][-1]) if inside.any() else None,
            "cm_end": float(cm[cm_in[-1]]) if len(cm_in) else None,
        }
    return out
