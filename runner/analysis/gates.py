"""Gates: which validity checks a prediction needs, and how each one voids or narrows it.

The paper's rules ("A prediction whose instrument or control gate fails is unscoreable, never
PASS or FAIL; an instrument gate voids only the predictions that use that instrument"; its frozen
evaluators' instrument guard: "< 2 valid seeds in a cell -> no CM verdict, behavioral verdict
unaffected"):

- **margin instrument** (``margin_valid``: max smoothed CM >= ``margin_min`` nats): used by the
  margin quantities (``cm_*``, ``pm_*``, the crossing timing figures in ``MARGIN_TIMING``, the
  registered M4b test ``cross_timing_ok`` among them). A margin prediction is scored on the
  instrument-valid seeds of its runs; with fewer than 2 valid seeds (or fewer than the ``k`` of
  its ``k/n`` quantifier) it is VOID. ``all`` then means all valid seeds.
  Behavioural predictions never look at it.
- **control** (``control_valid``, the agree control): used by the behavioural quantities. Any
  matched seed whose control fails voids the prediction. Any other validity named in a
  prediction's ``requires`` acts the same way.
- **intervention validity** (``[intervention_gate]`` of the prereg, off by default): in a dosed
  cell, each named control family must hold (RECOVERED and control-valid in at least ``seeds``
  of the cell's seeds); more than ``tolerance`` failing families make the cell
  INTERVENTION-INVALID, and every prediction on it is VOID (reason ``intervention-invalid``),
  except predictions about the gate's own control families (those are scored).

Every VOID carries ``void = {"gate", "runs", "seeds", ...}`` and a ``why`` that names the gate
and the seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

from runner.analysis.prereg import InterventionGate, Prediction, needed

CONTROL = "control_valid"
MARGIN = "margin_valid"
MARGIN_MIN_SEEDS = 2
RECOVERED = "RECOVERED"
GATE_NAMES = {CONTROL: "control", MARGIN: "margin"}


def uses_margin(quantity: str) -> bool:
    """Whether ``quantity`` is read off the margin instrument (CM or PM)."""
    return quantity.startswith(("cm_", "pm_")) or quantity in MARGIN_TIMING


# timing figures read off the CM zero crossing (trajectory.timing_figures), the M4b test included
MARGIN_TIMING = ("cross_lag", "abs_cross_lag", "cross_onset_ratio", "cross_timing_ok")


def gates_of(pred: Prediction) -> tuple[str, ...]:
    """The validity figures ``pred`` needs: its ``requires`` if given, else the instrument its
    quantity uses (``margin_valid`` for a margin quantity, ``control_valid`` otherwise); a margin
    quantity always needs ``margin_valid``."""
    if pred.requires is not None:
        gates = tuple(pred.requires)
    else:
        gates = (MARGIN,) if uses_margin(pred.quantity) else (CONTROL,)
    if uses_margin(pred.quantity) and MARGIN not in gates:
        gates = (*gates, MARGIN)
    return tuple(dict.fromkeys(gates))


def void(gate: str, why: str, runs: list[dict], **extra) -> dict:
    """A VOID result's fields: ``why`` names the gate and the seeds; ``void`` holds them as data."""
    seeds = [r.get("seed") for r in runs]
    return {"result": "VOID", "why": f"{gate}: {why}",
            "void": {"gate": gate, "runs": [r["run"] for r in runs], "seeds": seeds, **extra}}


def _seed_list(runs: list[dict]) -> str:
    return ", ".join(f"seed {r.get('seed')} ({r['run']})" for r in runs)


def cell_of(run: dict) -> tuple:
    """The cell a run is a seed of: corpus, budget, dose and window."""
    return (run.get("corpus"), run.get("budget"), run.get("dose", "none"), run.get("window", ""))


def holds(figures: dict | None) -> bool:
    """A control family holds in a seed: label RECOVERED (any case) and control valid."""
    return bool(figures) and str(figures.get("label", "")).upper() == RECOVERED and bool(figures.get(CONTROL))


def intervention_gate(cell_runs: list[dict], gate: InterventionGate) -> dict:
    """The intervention-validity gate on one dosed cell.

    ``cell_runs``: the cell's runs (verdict run dicts; ``families`` holds per-family figures with
    ``label`` and ``control_valid``). Returns ``{"valid", "failing": [families], "families":
    {family: {"held": seeds holding, "of": seeds, "ok"}}}``; always valid when the gate names no
    families."""
    fams = {}
    for fam in gate.families:
        held = sum(holds(r["families"].get(fam)) for r in cell_runs)
        need, _ = needed(gate.seeds, len(cell_runs))
        fams[fam] = {"held": int(held), "of": len(cell_runs), "ok": bool(cell_runs) and held >= need}
    failing = [f for f, x in fams.items() if not x["ok"]]
    return {"valid": len(failing) <= gate.tolerance, "failing": failing, "families": fams}


def intervention_cells(runs: list[dict], gate: InterventionGate) -> list[dict]:
    """:func:`intervention_gate` of every dosed cell among the complete, unsealed ``runs``."""
    if not gate.families:
        return []
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("complete") and not r.get("sealed") and r.get("dose", "none") != "none":
            cells.setdefault(cell_of(r), []).append(r)
    return [{"cell": dict(zip(("corpus", "budget", "dose", "window"), key)),
             "runs": [r["run"] for r in rs], **intervention_gate(rs, gate)} for key, rs in cells.items()]


def _intervention_void(family: str, matched: list[dict], cells: Sequence[dict]) -> dict | None:
    """VOID when a matched run sits in an INTERVENTION-INVALID cell; a prediction about one of the
    gate's own control families is not voided by it (it is the claim the gate checks)."""
    bad = {tuple(c["cell"].values()): c for c in cells if not c["valid"] and family not in c["families"]}
    hit = [r for r in matched if cell_of(r) in bad]
    if not hit:
        return None
    failing = sorted({f for r in hit for f in bad[cell_of(r)]["failing"]})
    where = "; ".join(f"{'/'.join(str(x) for x in k if x)} ({', '.join(c['failing'])})" for k, c in bad.items()
                      if any(cell_of(r) == k for r in hit))
    return void("intervention-invalid", f"control families failing in {where}: {_seed_list(hit)}", hit,
                families=failing)


def apply_gates(pred: Prediction, matched: list[dict], cells: Sequence[dict] = ()) -> tuple[list[dict], dict | None]:
    """The runs ``pred`` is scored on after its gates, or a VOID (``(runs, None)`` / ``([], void)``).

    ``matched``: the prediction's complete runs (quantifier already checked); ``cells``: the
    intervention gate per dosed cell (:func:`intervention_cells`)."""
    v = _intervention_void(pred.family, matched, cells)
    if v:
        return [], v
    fam = pred.family
    for g in gates_of(pred):
        if g == MARGIN:
            continue
        bad = [r for r in matched if not r["families"][fam].get(g)]
        if bad:
            return [], void(GATE_NAMES.get(g, g), f"{g} fails on {_seed_list(bad)}", bad)
    if MARGIN not in gates_of(pred):
        return matched, None
    valid = [r for r in matched if r["families"][fam].get(MARGIN)]
    bad = [r for r in matched if r not in valid]
    need = max(MARGIN_MIN_SEEDS, needed(pred.seeds, len(valid))[0])
    if len(valid) < need:
        return [], void("margin", f"instrument valid on {len(valid)} of {len(matched)} seeds, {need} needed"
                        + (f"; invalid: {_seed_list(bad)}" if bad else ""), bad)
    return valid, None
