"""Dose-response grouping, Spearman rho with the dose-0 baseline, the asymmetry calls, and the
dose predictions' PASS / FAIL / VOID."""

import pytest

import interventions  # noqa: F401  (registers kill and rescue)
from runner.analysis.dose_response import dose_response
from runner.analysis.prereg import DosePrediction
from runner.analysis.verdicts import score_dose_prediction


def _run(corpus, dose, seed, final, cm, label):
    return {"run": f"{corpus}-{dose}-{seed}", "corpus": corpus, "budget": "packed", "seed": seed, "dose": dose,
            "complete": True, "sealed": False, "status": "confirmatory",
            "families": {"pronoun_gender": {"final": final, "cm_final": cm, "label": label, "control_valid": True}}}


RUNS = [
    _run("stories", "none", 1, 0.99, 2.5, "RECOVERED"), _run("stories", "none", 2, 0.97, 2.7, "RECOVERED"),
    _run("stories", "kill:0.5", 1, 0.85, 1.0, "RECOVERED"), _run("stories", "kill:0.5", 2, 0.7, 0.5, "PARTIAL"),
    _run("stories", "kill:1.0", 1, 0.1, -1.5, "DISPLACED"), _run("stories", "kill:1.0", 2, 0.2, -1.0, "DISPLACED"),
    _run("web", "none", 1, 0.05, -1.2, "DISPLACED"),
    _run("web", "rescue:1", 1, 0.1, -1.0, "DISPLACED"), _run("web", "rescue:100", 1, 0.3, -0.2, "DISPLACED"),
]


def test_groups_rho_and_asymmetry():
    sup = {"none": 4.0, "kill:0.5": 0.8, "kill:1.0": 0.0, "rescue:1": 1.1, "rescue:100": 105.0}
    dr = dose_response(RUNS, lambda r, fam: {"contested": sup[r["dose"]]})
    kill = next(g for g in dr["groups"] if g["intervention"] == "kill")
    assert [lv["dose"] for lv in kill["levels"]] == [0.0, 0.5, 1.0]
    assert kill["levels"][1]["mean_final"] == pytest.approx(0.775) and kill["levels"][2]["n_seeds"] == 2
    assert kill["rho_cm_final"] == pytest.approx(-1.0) and kill["levels"][2]["support_contested"] == 0.0
    asym = {a["intervention"]: a for a in dr["asymmetry"]}
    assert asym["kill"]["kills"] and asym["kill"]["kills_from_dose"] == 1.0 and not asym["kill"]["rescues"]
    assert asym["kill"]["monotone_final"]
    assert not asym["rescue"]["rescues"] and not asym["rescue"]["kills"]  # already displaced at dose 0
    assert asym["rescue"]["max_support_contested"] == 105.0


def test_dose_predictions_pass_fail_void():
    dr = dose_response(RUNS, lambda r, fam: {})
    pred = dict(id="D", family="pronoun_gender", intervention="kill", corpus="stories", quantity="rho_cm_final")
    assert score_dose_prediction(DosePrediction(**pred, op="<", value=0), dr, RUNS)["result"] == "PASS"
    assert score_dose_prediction(DosePrediction(**pred, op=">", value=0), dr, RUNS)["result"] == "FAIL"
    rescue = {**pred, "intervention": "rescue", "corpus": "web"}
    assert score_dose_prediction(DosePrediction(**rescue, op=">", value=0), dr, RUNS)["result"] == "PASS"
    void = score_dose_prediction(DosePrediction(**rescue, op=">", value=0, min_levels=4), dr, RUNS)
    assert void["result"] == "VOID" and "3 dose levels, 4 needed" in void["why"]
    nope = DosePrediction(**{**pred, "corpus": "nope"}, op="<", value=0)
    assert score_dose_prediction(nope, dr, RUNS)["result"] == "VOID"


def test_a_windowed_dose_is_its_own_treatment():
    """rescue:1 from step 0 and rescue:1 only after step 4000 are different treatments: separate
    groups, and a selector without a window never picks the windowed run."""
    from runner.analysis.dose_response import treatment
    from runner.analysis.prereg import Prediction
    from runner.analysis.verdicts import score_prediction

    late = {**_run("web", "rescue:1", 1, 0.55, -0.2, "DISPLACED"), "run": "late", "window": "4000-end"}
    runs = RUNS + [late]
    dr = dose_response(runs, lambda r, fam: {})
    rescue = [g for g in dr["groups"] if g["intervention"] == "rescue"]
    assert sorted(g["window"] for g in rescue) == ["", "4000-end"]
    whole = next(g for g in rescue if not g["window"])
    assert [lv["dose"] for lv in whole["levels"]] == [0.0, 1.0, 100.0] and whole["levels"][1]["finals"] == [0.1]
    windowed = next(g for g in rescue if g["window"])
    assert [lv["finals"] for lv in windowed["levels"]] == [[0.05], [0.55]]
    assert treatment(windowed) == "rescue (steps 4000-end)" and treatment(whole) == "rescue"
    sel = dict(id="R", family="pronoun_gender", quantity="final", op=">=", value=0.5, seeds="1/1", requires=[])
    plain = score_prediction(Prediction(**sel, select={"corpus": "web", "dose": "rescue:1"}), runs)
    assert plain["runs"] == ["web-rescue:1-1"] and plain["result"] == "FAIL"
    late_sel = {"corpus": "web", "dose": "rescue:1", "window": "4000-end"}
    late_p = score_prediction(Prediction(**sel, select=late_sel), runs)
    assert late_p["runs"] == ["late"] and late_p["result"] == "PASS"
    # a dose prediction names its window: the plain one sees only whole-run doses
    pred = dict(id="D", family="pronoun_gender", intervention="rescue", corpus="web", quantity="rho_final", op=">",
                value=0)
    assert score_dose_prediction(DosePrediction(**pred), dr, runs)["result"] == "PASS"
    assert "2 dose levels" in score_dose_prediction(DosePrediction(**pred, window="4000-end"), dr, runs)["why"]


def test_asymmetry_applies_the_given_classifier():
    """The kill / rescue calls use the classifier in force (the verdict passes the prereg's), not
    hard-coded 0.6 / 0.8."""
    from runner.trajectory import Classifier

    asym = {a["intervention"]: a for a in dose_response(RUNS, lambda r, fam: {})["asymmetry"]}
    assert asym["kill"]["kills_from_dose"] == 1.0  # 0.775 at kill:0.5 is above 0.6
    strict = {a["intervention"]: a for a in
              dose_response(RUNS, lambda r, fam: {}, Classifier(displaced=0.8, recovered=0.98))["asymmetry"]}
    assert strict["kill"]["kills_from_dose"] == 0.5  # 0.775 <= 0.8
    lenient = {a["intervention"]: a for a in
               dose_response(RUNS, lambda r, fam: {}, Classifier(displaced=0.02, recovered=0.25))["asymmetry"]}
    assert lenient["rescue"]["rescues"] and lenient["rescue"]["rescues_from_dose"] == 100.0
