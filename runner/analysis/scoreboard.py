"""The scoreboard: every registered prediction scored PASS / FAIL / VOID on a verdict's runs.

A prediction selects runs (:func:`select`), needs enough complete ones for its seed quantifier,
passes its gates (:mod:`runner.analysis.gates`), and is PASS when at least ``k`` of the scored
runs satisfy ``quantity op value``. Predictions come from the locked prereg or from amendments
(:meth:`runner.analysis.prereg.Locked.registered`); one added by an amendment applies only to data
first scored after the amendment: runs first scored before it are left out (listed in
``before_registration``), and a prediction left with too few runs is VOID (gate ``amendment``).
Every result says where it was registered (``registered``: the lock or amendment n, and when).
"""

from __future__ import annotations

from collections.abc import Sequence

from runner.analysis.gates import apply_gates, intervention_cells, void
from runner.analysis.prereg import KINDS, OPS, Locked, Prediction, needed, produced_after


def select(run: dict, sel: dict) -> bool:
    """A selector that names no dose selects undosed runs only; one that names no window selects
    runs dosed for the whole run only (``window = "4000-end"`` selects a phase-B window)."""
    run = {"dose": "none", "window": "", **run}
    return all(str(run.get(key)) == str(val) for key, val in {"dose": "none", "window": "", **sel}.items())


def _status(runs: list[dict]) -> str:
    return "confirmatory" if runs and all(r["status"] == "confirmatory" for r in runs) else "exploratory"


def _registration(runs: list[dict], registered: dict | None) -> tuple[list[dict], list[dict]]:
    """(runs the prediction governs, runs first scored before the amendment that added it)."""
    if not registered or registered.get("amendment") is None:
        return runs, []
    after = [r for r in runs if produced_after(r.get("first_scored_utc"), registered["utc"])]
    return after, [r for r in runs if r not in after]


def _amendment_void(registered: dict, before: list[dict]) -> dict:
    return void("amendment", f"added by {registered['by']} at {registered['utc']}; it applies to data first "
                f"scored after that, and {', '.join(r['run'] for r in before)} were first scored before", before)


def score_prediction(pred: Prediction, runs: list[dict], cells: Sequence[dict] = (),
                     registered: dict | None = None) -> dict:
    """One prediction on the verdict's runs; ``cells``: the intervention gate per dosed cell,
    ``registered``: where the prediction was registered (default: the lock)."""
    candidates = [r for r in runs if not r.get("sealed") and select(r, pred.select) and pred.family in r["families"]]
    candidates, before = _registration(candidates, registered)
    matched = [r for r in candidates if r.get("complete")]  # runs still training are not scored
    res = {"id": pred.id, "text": pred.text, "family": pred.family, "select": pred.select,
           "rule": f"{pred.quantity} {pred.op} {pred.value} in {pred.seeds} seeds", "runs": [r["run"] for r in matched],
           "registered": registered or {"by": "lock"}, "before_registration": [r["run"] for r in before]}
    status = _status(matched)
    if not matched:
        if before:
            return {**res, **_amendment_void(res["registered"], before), "status": status}
        return {**res, "result": "VOID", "why": "selection: no run matches the selector", "status": status,
                "void": {"gate": "selection", "runs": [], "seeds": []}}
    _, expect = pred.needed(len(matched))
    if len(matched) < expect:
        unfinished = len(candidates) - len(matched)
        extra = f" ({unfinished} more still training)" if unfinished else ""
        extra += f" ({len(before)} first scored before the amendment that added it)" if before else ""
        return {**res, **void("quantifier", f"{len(matched)} complete runs{extra}, the quantifier expects {expect}",
                              matched), "status": status}
    scored, v = apply_gates(pred, matched, list(cells))
    if v:
        return {**res, **v, "status": status}
    values = [r["families"][pred.family].get(pred.quantity) for r in scored]
    ok = [v is not None and OPS[pred.op](v, pred.value) for v in values]
    need = needed(pred.seeds, len(scored))[0]
    out = {**res, "values": values, "successes": int(sum(ok)), "needed": need,
           "scored_runs": [r["run"] for r in scored], "result": "PASS" if sum(ok) >= need else "FAIL",
           "status": status}
    left = [r for r in matched if r not in scored]
    if left:
        out["instrument_invalid"] = {"gate": "margin", "runs": [r["run"] for r in left],
                                     "seeds": [r.get("seed") for r in left]}
    return out


def score_dose_prediction(pred, dr: dict, runs: list[dict], registered: dict | None = None) -> dict:
    """PASS / FAIL on a dose-response group's rho; VOID without the group, its baseline, or
    enough levels, or (for a prediction an amendment added) when a run of the group was first
    scored before the amendment."""
    res = {"id": pred.id, "text": pred.text, "family": pred.family,
           "select": {"intervention": pred.intervention, "corpus": pred.corpus, "budget": pred.budget,
                      **({"window": pred.window} if pred.window else {})},
           "rule": f"{pred.quantity} {pred.op} {pred.value}", "registered": registered or {"by": "lock"}}
    g = next((g for g in dr["groups"] if (g["intervention"], g["corpus"], g["budget"], g["family"], g["window"])
              == (pred.intervention, pred.corpus, pred.budget, pred.family, pred.window)), None)
    used = [lv for lv in (g["levels"] if g else [])]
    names = {lv["dose_name"] for lv in used}
    matched = [r for r in runs if not r.get("sealed") and r.get("complete") and r["corpus"] == pred.corpus
               and r["budget"] == pred.budget and (r["dose"] == "none" and "none" in names
                                                   or r["dose"] in names and r.get("window", "") == pred.window)]
    status = _status(matched)
    _, before = _registration(matched, registered)
    if before:
        return {**res, **_amendment_void(res["registered"], before), "status": status}
    if g is None or not g["has_baseline"]:
        return {**res, **void("selection", "no dose-0 baseline and dosed runs for this group", matched),
                "status": status}
    if len(used) < pred.min_levels:
        return {**res, **void("levels", f"{len(used)} dose levels, {pred.min_levels} needed", matched),
                "status": status}
    v = g[pred.quantity]
    if v is None:
        return {**res, **void("rho", "rho undefined (constant values)", matched), "status": status}
    return {**res, "values": [v], "result": "PASS" if OPS[pred.op](v, pred.value) else "FAIL", "status": status}


def scoreboard(locked: Locked, runs: list[dict], dr: dict) -> dict:
    """Every registered prediction, falsifier and dose prediction (locked and amended) scored,
    and the intervention gate of every dosed cell (``intervention_gate``; empty when it is off)."""
    cells = intervention_cells(runs, locked.prereg.intervention_gate)
    out: dict = {"intervention_gate": cells}
    for kind in KINDS:
        reg = locked.registered(kind)
        if kind == "dose_predictions":
            out[kind] = [score_dose_prediction(p, dr, runs, r) for p, r in reg]
        else:
            out[kind] = [score_prediction(p, runs, cells, r) for p, r in reg]
    return out
