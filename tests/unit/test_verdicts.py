import numpy as np
import pytest

from runner.analysis.prereg import Prediction
from runner.analysis.verdicts import bootstrap_ci, score_prediction
from runner.trajectory import Classifier, family_figures

STEPS = np.arange(0, 4001, 50)


def _traj(kind):
    s = STEPS
    rise = np.clip((s - 100) / 300, 0, 1)
    if kind == "RECOVERED":
        return rise, np.ones(len(s)), rise * 2
    if kind == "DISPLACED":
        c = np.where(s < 2500, rise, 0.05)
        return c, np.ones(len(s)), np.where(s < 2550, 1.0, -1.0)
    if kind == "NEVER":
        return np.full(len(s), 0.5), np.ones(len(s)), np.zeros(len(s))
    if kind == "UNSTABLE":  # the smoothed final window (8 evals) spans more than 0.2
        c = rise.copy()
        c[-9:] = [1, 1, 1, 0.4, 0.4, 0.4, 1, 1, 1]
        return c, np.ones(len(s)), rise
    if kind == "PARTIAL":
        return np.where(s < 2000, rise, 0.7), np.ones(len(s)), rise
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["RECOVERED", "DISPLACED", "NEVER", "UNSTABLE", "PARTIAL"])
def test_every_label(kind):
    f = family_figures(STEPS, *_traj(kind))
    assert f["label"] == kind
    assert f["control_valid"]


def test_invalid_control_and_margin():
    c, a, cm = _traj("DISPLACED")
    a = np.where(STEPS < 3000, 1.0, 0.75)
    f = family_figures(STEPS, c, a, cm * 0.3)
    assert not f["control_valid"] and not f["margin_valid"]


def test_constants_change_labels():
    c, a, cm = _traj("PARTIAL")  # final 0.7
    assert family_figures(STEPS, c, a, cm, Classifier(displaced=0.75))["label"] == "DISPLACED"


def test_bootstrap_ci_reproducible_and_covers():
    rng = np.random.default_rng(0)
    correct = rng.random((len(STEPS), 64)) < 0.7
    diff = rng.normal(0.5, 1, (len(STEPS), 64))
    a = bootstrap_ci(STEPS, correct, diff, Classifier(), seed=3, n_boot=500)
    b = bootstrap_ci(STEPS, correct, diff, Classifier(), seed=3, n_boot=500)
    assert a == b
    lo, hi = a["final_ci"]
    assert lo < correct[-9:].mean() < hi and hi - lo < 0.3


def _run(name, corpus, final, control=True, margin=True, status="confirmatory"):
    return {"run": name, "corpus": corpus, "budget": "packed", "seed": 1, "sealed": False, "status": status,
            "complete": True,
            "families": {"pronoun_gender": {"final": final, "control_valid": control, "margin_valid": margin}}}


def _pred(**kw):
    base = dict(id="P", family="pronoun_gender", select={"corpus": "web"}, quantity="final", op="<=", value=0.6,
                seeds="2/3")
    return Prediction(**{**base, **kw})


def test_prediction_pass_fail_void():
    runs = [_run("a", "web", 0.1), _run("b", "web", 0.2), _run("c", "web", 0.9)]
    assert score_prediction(_pred(), runs)["result"] == "PASS"
    assert score_prediction(_pred(seeds="3/3"), runs)["result"] == "FAIL"
    assert score_prediction(_pred(select={"corpus": "x"}), runs)["result"] == "VOID"
    assert score_prediction(_pred(), runs[:2])["result"] == "VOID"  # quantifier expects 3 runs
    bad = [_run("a", "web", 0.1, control=False), *runs[1:]]
    r = score_prediction(_pred(), bad)
    assert r["result"] == "VOID" and "control_valid" in r["why"]
    mixed = [runs[0], runs[1], _run("c", "web", 0.9, status="exploratory")]
    assert score_prediction(_pred(), mixed)["status"] == "exploratory"


def test_incomplete_runs_are_not_scored():
    runs = [_run("a", "web", 0.1), _run("b", "web", 0.2), {**_run("c", "web", 0.1), "complete": False}]
    r = score_prediction(_pred(), runs)
    assert r["result"] == "VOID" and "1 more still training" in r["why"]


def test_sealed_runs_are_not_matched():
    runs = [_run("a", "web", 0.1), _run("b", "web", 0.2), {**_run("c", "web", 0.1), "sealed": True}]
    assert score_prediction(_pred(), runs)["result"] == "VOID"
