import numpy as np

from runner.trajectory import Classifier, family_figures, smooth


def test_smooth_trailing_mean():
    assert np.allclose(smooth(np.array([0, 3, 6, 9.0]), 3), [0, 1.5, 3, 6])


def test_emerge_then_collapse_figures():
    steps = np.arange(0, 3001, 50)
    conflict = np.where(steps < 300, 0.2, np.where(steps < 2000, 1.0, 0.0))
    agree = np.full(len(steps), 1.0)
    cm = np.where(steps < 2050, 1.0, -1.0)
    f = family_figures(steps, conflict, agree, cm)
    assert f["label"] == "displaced" and f["emerged"] and f["control_valid"]
    # smoothed over 3 evals: at 2000 mean(1,1,0)=.67 >= .5, at 2050 mean(1,0,0)=.33
    assert f["onset"] == 2000
    # smoothed CM: at 2050 mean(1,1,-1)=.33, at 2100 mean(1,-1,-1)=-.33: first negative, stays negative
    assert f["cm_cross"] == 2100
    assert f["cross_lag"] == 100
    assert f["final"] == 0.0 and f["margin_valid"]


def test_survivor_and_never():
    steps = np.arange(0, 2001, 50)
    up = np.clip((steps - 100) / 400, 0, 1)
    f = family_figures(steps, up, np.ones(len(steps)), up * 2)
    assert f["label"] == "recovered" and f["onset"] is None and f["cm_cross"] is None
    g = family_figures(steps, np.full(len(steps), 0.4), np.ones(len(steps)), np.zeros(len(steps)))
    assert g["label"] == "never" and not g["margin_valid"]


def test_invalid_control():
    steps = np.arange(0, 2001, 50)
    agree = np.where(steps < 1000, 1.0, 0.7)
    f = family_figures(steps, np.ones(len(steps)), agree, np.ones(len(steps)), Classifier())
    assert not f["control_valid"]
