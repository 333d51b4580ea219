"""Dose-response across runs, and the cross-model view of public checkpoint series.

Dose-response: does flipping support kill a rule, does injecting it rescue one?

Runs are grouped by (intervention, corpus, budget, window: a dose applied only in a window of
steps is its own treatment); the runs of the same corpus and budget with
dose ``none`` are the dose-0 baseline of that group. Per rule family and dose level: the
seed-mean final contrast margin (CM_final) and conflict final, the labels, and the support the
model actually saw (pooled over cue classes, counted on the intervened stream). Across levels,
including the baseline: Spearman rho(dose, seed-mean CM_final) and rho(dose, seed-mean final). A level whose cell the
intervention-validity gate voids (INTERVENTION-INVALID: too many unrelated control families failed
in it) carries ``void`` and has no verdict: it is left out of both rhos and of the asymmetry.

The asymmetry table answers, per intervention and family: does any dose bring a seed-mean final
that was not DISPLACED at dose 0 to DISPLACED (<= the classifier's ``displaced``: it kills), or one
that was not RECOVERED to RECOVERED (>= its ``recovered``: it rescues), and from which dose.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from runner.analysis.gates import cell_of
from runner.analysis.stats import spearman
from runner.doses import parse_dose_key
from runner.trajectory import Classifier


def treatment(g: dict) -> str:
    """A group's or asymmetry row's intervention as shown: ``rescue``, or ``rescue (steps 4000-end)``."""
    return g["intervention"] + (f" (steps {g['window']})" if g.get("window") else "")


def _by_treatment(runs: list[dict]) -> tuple[dict, dict]:
    """(baselines by (corpus, budget), dosed runs as (level, run) by (intervention, corpus, budget,
    window)) among the complete, unsealed runs."""
    baselines, dosed = defaultdict(list), defaultdict(list)
    for r in runs:
        if not r.get("complete") or r.get("sealed"):
            continue
        name, key, level = parse_dose_key(r.get("dose", "none"))
        name = f"{name} ({key}=)" if key else name  # kill:ratio=r: its own group, x = the target ratio
        if name == "none":
            baselines[(r["corpus"], r["budget"])].append(r)
        else:
            # the same dose in another window (e.g. only after step 4000) is another treatment
            dosed[(name, r["corpus"], r["budget"], r.get("window", ""))].append((level, r))
    return baselines, dosed


def _level(level: float, rs: list[dict], fam: str, support_of, invalid: dict | None = None) -> dict:
    figs = [r["families"][fam] for r in rs]
    sup = support_of(rs[0], fam) or {}
    return {
        "void": _void_of(rs, fam, invalid or {}),
        "dose": level, "dose_name": rs[0].get("dose", "none"), "n_seeds": len(rs),
        "seeds": [r["seed"] for r in rs], "labels": [f["label"] for f in figs],
        "finals": [f["final"] for f in figs], "cm_finals": [f["cm_final"] for f in figs],
        "mean_final": float(np.mean([f["final"] for f in figs])),
        "mean_cm_final": float(np.mean([f["cm_final"] for f in figs])),
        "controls_valid": all(f.get("control_valid") for f in figs),
        "support_windowed": sup.get("windowed"), "support_contested": sup.get("contested"),
    }


def _void_of(rs: list[dict], fam: str, invalid: dict) -> dict | None:
    """The intervention gate's VOID of a dose level: some run of it sits in an INTERVENTION-INVALID
    cell (``invalid``: cell key -> gate result) and ``fam`` is not one of that gate's own control
    families (a control family's figures are what the gate read, so they stay scored)."""
    hit = [r for r in rs if cell_of(r) in invalid and fam not in invalid[cell_of(r)]["families"]]
    if not hit:
        return None
    failing = sorted({f for r in hit for f in invalid[cell_of(r)]["failing"]})
    return {"gate": "intervention-invalid", "runs": [r["run"] for r in hit], "seeds": [r.get("seed") for r in hit],
            "families": failing}


def scored(levels: list[dict]) -> list[dict]:
    """The levels that carry a verdict: those the intervention gate did not void."""
    return [lv for lv in levels if not lv.get("void")]


def _asymmetry(g: dict, k: Classifier) -> dict:
    """Does some dose bring a rule that was not DISPLACED at dose 0 to DISPLACED (kills), or one
    that was not RECOVERED at dose 0 to RECOVERED (rescues), under ``k``'s thresholds."""
    levels, name = scored(g["levels"]), g["intervention"]
    xs, means = [lv["dose"] for lv in levels], [lv["mean_final"] for lv in levels]
    base = levels[0]["mean_final"] if levels and levels[0]["dose"] == 0.0 else None
    kill_at = None if base is not None and base <= k.displaced else next(
        (lv["dose"] for lv in levels if lv["dose"] > 0 and lv["mean_final"] <= k.displaced), None)
    rescue_at = None if base is not None and base >= k.recovered else next(
        (lv["dose"] for lv in levels if lv["dose"] > 0 and lv["mean_final"] >= k.recovered), None)
    return {
        "intervention": name, "window": g["window"], "corpus": g["corpus"], "family": g["family"],
        "baseline_final": base,
        "kills": kill_at is not None, "kills_from_dose": kill_at,
        "rescues": rescue_at is not None, "rescues_from_dose": rescue_at,
        "monotone_final": bool(all(b <= a + 1e-9 for a, b in zip(means, means[1:]))) if name == "kill"
        else bool(all(b >= a - 1e-9 for a, b in zip(means, means[1:]))),
        "max_dose": max(xs) if xs else None,
        "max_support_contested": max((lv["support_contested"] or 0) for lv in levels) if levels else None,
        "rho_cm_final": g["rho_cm_final"],
    }


def dose_response(runs: list[dict], support_of, classifier: Classifier = Classifier(),
                  cells: Sequence[dict] = ()) -> dict:
    """``runs``: run verdicts (with ``dose``, ``corpus``, ``budget``, ``complete``, ``families``);
    ``support_of(run, family) -> {mode: ratio}``; ``classifier``: whose DISPLACED and RECOVERED
    thresholds the asymmetry table applies; ``cells``: the intervention gate per dosed cell
    (:func:`runner.analysis.gates.intervention_cells`): a level with a run in an invalid cell gets
    ``void`` (shown INTERVENTION-INVALID, left out of rho and the asymmetry). Returns
    ``{"groups": [...], "asymmetry": [...]}``."""
    invalid = {tuple(c["cell"].values()): c for c in cells if not c["valid"]}
    baselines, dosed = _by_treatment(runs)
    groups, asym = [], []
    for (name, corpus, budget, window), items in sorted(dosed.items()):
        for fam in sorted({f for _, r in items for f in r["families"]}):
            by_level = defaultdict(list)
            by_level[0.0] += baselines.get((corpus, budget), [])
            for level, r in items:
                by_level[level].append(r)
            levels = []
            for level in sorted(by_level):
                rs = [r for r in by_level[level] if "final" in r["families"].get(fam, {})]
                if rs:
                    levels.append(_level(level, rs, fam, support_of, invalid))
            xs = [lv["dose"] for lv in scored(levels)]
            g = {"intervention": name, "window": window, "corpus": corpus, "budget": budget, "family": fam,
                 "levels": levels,
                 "has_baseline": bool(levels and levels[0]["dose"] == 0.0),
                 "rho_cm_final": spearman(xs, [lv["mean_cm_final"] for lv in scored(levels)]),
                 "rho_final": spearman(xs, [lv["mean_final"] for lv in scored(levels)])}
            groups.append(g)
            asym.append(_asymmetry(g, classifier))
    return {"groups": groups, "asymmetry": asym}


def cross_model(runs: list[dict]) -> dict:
    """Public checkpoint series (runs of kind ``public``), per family: each model's parameter
    count, size rank, peak, final and collapse depth (peak - final), and Spearman
    rho(size rank, conflict final) across models."""
    pub = sorted((r for r in runs if r.get("kind") == "public" and r.get("n_params")), key=lambda r: r["n_params"])
    out: dict = {}
    for fam in sorted({f for r in pub for f in r["families"]}):
        rows = []
        for rank, r in enumerate(pub, start=1):
            f = r["families"].get(fam, {})
            if "final" not in f:
                continue
            rows.append({"model": r["corpus"], "n_params": r["n_params"], "size_rank": rank, "label": f["label"],
                         "peak": f["peak"], "peak_step": f["peak_step"], "final": f["final"],
                         "depth": f["peak"] - f["final"], "onset": f.get("onset"), "cm_final": f["cm_final"]})
        if rows:
            out[fam] = {"models": rows, "rho_size_final": spearman([r["size_rank"] for r in rows],
                                                                   [r["final"] for r in rows])}
    return out
