"""Gates as the paper: each gate voids only its own predictions; margin predictions are scored on
the instrument-valid seeds when at least two are valid; the intervention gate voids a dosed cell."""

import pytest

from runner.analysis.gates import gates_of, intervention_cells, intervention_gate, uses_margin
from runner.analysis.prereg import InterventionGate, Prediction, Prereg
from runner.analysis.scoreboard import score_prediction


def _run(name, seed, final=0.1, cm_final=-1.0, control=True, margin=True, dose="none", corpus="web", **fams):
    pg = {"label": "DISPLACED", "final": final, "cm_final": cm_final, "control_valid": control,
          "margin_valid": margin}
    return {"run": name, "corpus": corpus, "budget": "packed", "seed": seed, "dose": dose, "window": "",
            "sealed": False, "status": "confirmatory", "complete": True,
            "first_scored_utc": "2030-01-01T00:00:00+00:00", "families": {"pronoun_gender": pg, **fams}}


def _pred(**kw):
    base = dict(id="P", family="pronoun_gender", select={"corpus": "web"}, quantity="final", op="<=", value=0.6,
                seeds="2/3")
    return Prediction(**{**base, **kw})


@pytest.mark.parametrize("quantity,margin", [("final", False), ("peak", False), ("transience", False),
                                             ("cm_final", True), ("cm_peak", True), ("cross_lag", True),
                                             ("abs_cross_lag", True), ("pm_final", True),
                                             ("cross_onset_ratio", True), ("cross_timing_ok", True)])
def test_quantity_instrument(quantity, margin):
    assert uses_margin(quantity) is margin
    assert gates_of(_pred(quantity=quantity)) == (("margin_valid",) if margin else ("control_valid",))


def test_explicit_requires_kept_and_margin_always_gates_a_margin_quantity():
    assert gates_of(_pred(requires=["control_valid", "margin_valid"])) == ("control_valid", "margin_valid")
    assert gates_of(_pred(requires=[])) == ()
    assert gates_of(_pred(quantity="cm_final", requires=["control_valid"])) == ("control_valid", "margin_valid")


def test_margin_gate_does_not_void_a_behavioural_prediction():
    runs = [_run("a", 42, margin=False), _run("b", 43, margin=False), _run("c", 44, margin=False)]
    r = score_prediction(_pred(), runs)
    assert r["result"] == "PASS" and r["successes"] == 3 and "instrument_invalid" not in r


def test_margin_prediction_scored_on_instrument_valid_seeds():
    # seed 44's instrument is invalid and its (meaningless) CM would fail the prediction: it is left out
    runs = [_run("a", 42), _run("b", 43), _run("c", 44, cm_final=2.0, margin=False)]
    r = score_prediction(_pred(quantity="cm_final", op="<", value=0.0), runs)
    assert r["result"] == "PASS" and r["scored_runs"] == ["a", "b"] and r["needed"] == 2
    assert r["instrument_invalid"] == {"gate": "margin", "runs": ["c"], "seeds": [44]}
    # with 2 valid seeds a 2/3 prediction needs both of them
    runs[1]["families"]["pronoun_gender"]["cm_final"] = 0.5
    assert score_prediction(_pred(quantity="cm_final", op="<", value=0.0), runs)["result"] == "FAIL"


def test_fewer_than_two_valid_seeds_is_no_margin_verdict():
    runs = [_run("a", 42), _run("b", 43, margin=False), _run("c", 44, margin=False)]
    r = score_prediction(_pred(quantity="cm_final", op="<", value=0.0, seeds="1/3"), runs)
    assert r["result"] == "VOID" and r["void"]["gate"] == "margin"
    assert r["void"]["seeds"] == [43, 44] and "seed 43 (b)" in r["why"] and "1 of 3 seeds, 2 needed" in r["why"]
    # ... while the behavioural prediction on the same cell is scored
    assert score_prediction(_pred(), runs)["result"] == "PASS"


def test_margin_quantifier_needs_k_valid_seeds():
    runs = [_run("a", 42), _run("b", 43), _run("c", 44, margin=False)]
    r = score_prediction(_pred(quantity="cm_final", op="<", value=0.0, seeds="3/3"), runs)
    assert r["result"] == "VOID" and "3 needed" in r["why"]
    r = score_prediction(_pred(quantity="cm_final", op="<", value=0.0, seeds="all"), runs)
    assert r["result"] == "PASS" and r["needed"] == 2


def test_control_gate_voids_naming_gate_and_seeds():
    runs = [_run("a", 42), _run("b", 43, control=False), _run("c", 44)]
    r = score_prediction(_pred(), runs)
    assert r["result"] == "VOID" and r["void"] == {"gate": "control", "runs": ["b"], "seeds": [43]}
    assert r["why"].startswith("control:") and "seed 43 (b)" in r["why"]
    # a margin prediction does not use the control
    assert score_prediction(_pred(quantity="cm_final", op="<", value=0.0), runs)["result"] == "PASS"


def _ctl(label="RECOVERED", control=True):
    return {"label": label, "control_valid": control}


def test_intervention_gate_function():
    gate = InterventionGate(families=("det", "irr", "neg"), seeds="2/3", tolerance=1)
    ok = [_run(n, s, dose="kill:1.0", det=_ctl(), irr=_ctl(), neg=_ctl()) for n, s in (("a", 1), ("b", 2), ("c", 3))]
    assert intervention_gate(ok, gate) == {"valid": True, "failing": [],
                                           "families": {f: {"held": 3, "of": 3, "ok": True}
                                                        for f in ("det", "irr", "neg")}}
    # one family failing is tolerated; a seed with an invalid control does not hold; labels in any case
    one = [_run("a", 1, det=_ctl("displaced"), irr=_ctl("recovered"), neg=_ctl()),
           _run("b", 2, det=_ctl(control=False), irr=_ctl(), neg=_ctl()), _run("c", 3, det=_ctl(), irr=_ctl())]
    g = intervention_gate(one, gate)
    assert g["valid"] and g["failing"] == ["det"] and g["families"]["neg"] == {"held": 2, "of": 3, "ok": True}
    two = [{**r, "families": {**r["families"], "neg": _ctl("PARTIAL")}} for r in one]
    assert intervention_gate(two, gate) == {**intervention_gate(two, gate), "valid": False, "failing": ["det", "neg"]}
    assert intervention_gate(two, gate.model_copy(update={"tolerance": 2}))["valid"]


def test_intervention_invalid_cell_voids_its_predictions_only():
    gate = InterventionGate(families=("det", "irr"))
    bad = dict(det=_ctl("DISPLACED"), irr=_ctl("NEVER"))
    runs = [_run(n, s, dose="kill:1.0", **bad) for n, s in (("k1", 1), ("k2", 2), ("k3", 3))]
    runs += [_run(n, s, **bad) for n, s in (("u1", 1), ("u2", 2), ("u3", 3))]  # undosed: never gated
    cells = intervention_cells(runs, gate)
    assert [(c["cell"]["dose"], c["valid"]) for c in cells] == [("kill:1.0", False)]
    r = score_prediction(_pred(select={"corpus": "web", "dose": "kill:1.0"}), runs, cells)
    assert r["result"] == "VOID" and r["void"]["gate"] == "intervention-invalid"
    assert r["void"]["families"] == ["det", "irr"] and r["void"]["seeds"] == [1, 2, 3]
    assert "intervention-invalid" in r["why"] and "det, irr" in r["why"]
    assert score_prediction(_pred(), runs, cells)["result"] == "PASS"
    # a claim about a gate family itself is scored, not voided by the gate
    det = _pred(family="det", quantity="label", op="==", value="RECOVERED", requires=[],
                select={"corpus": "web", "dose": "kill:1.0"})
    assert score_prediction(det, runs, cells)["result"] == "FAIL"


def test_intervention_gate_is_off_by_default():
    assert Prereg().intervention_gate.families == ()
    assert intervention_cells([_run("k", 1, dose="kill:1.0")], Prereg().intervention_gate) == []


def test_report_shows_the_intervention_gate_per_cell():
    from runner.report.html import _intervention_gate_sections

    gate = InterventionGate(families=("det", "irr"))
    runs = [_run(n, s, dose="kill:1.0", det=_ctl("DISPLACED"), irr=_ctl("NEVER")) for n, s in (("k1", 1), ("k2", 2))]
    (html,) = _intervention_gate_sections(intervention_cells(runs, gate))
    assert "web/packed/kill:1.0" in html and "INTERVENTION-INVALID" in html and "det 0/2" in html
    assert _intervention_gate_sections([]) == []
