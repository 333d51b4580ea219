import numpy as np
import pytest

from runner.trajectory import (
    DISPLACED,
    NEVER,
    RECOVERED,
    UNGROK_0_1,
    Classifier,
    crossing_within,
    family_figures,
    n_final,
    smooth,
)


def test_smooth_centred_and_trailing():
    # centred (the paper's): i-1..i+1, two values at both ends
    assert np.allclose(smooth(np.array([0, 3, 6, 9.0]), 3), [1.5, 3, 6, 7.5])
    assert np.allclose(smooth(np.array([0, 3, 6, 9.0]), 3, centred=False), [0, 1.5, 3, 6])
    assert np.allclose(smooth(np.array([0, 4, 8, 12.0]), 4), [2, 4, 6, 8])  # pandas' even centring: i-2..i+1


def test_final_window_uses_pythons_round():
    k = Classifier()
    assert [n_final(n, k) for n in (10, 25, 35, 44, 45, 79)] == [3, 3, 4, 4, 4, 8]  # round(2.5) = 2, round(4.5) = 4
    assert n_final(25, Classifier(operators=UNGROK_0_1)) == 3 and n_final(44, Classifier(operators=UNGROK_0_1)) == 5


def test_emerge_then_collapse_figures():
    steps = np.arange(0, 3001, 50)
    conflict = np.where(steps < 300, 0.2, np.where(steps < 2000, 1.0, 0.0))
    agree = np.full(len(steps), 1.0)
    cm = np.where(steps < 2050, 1.0, -1.0)
    f = family_figures(steps, conflict, agree, cm)
    assert f["label"] == DISPLACED and f["emerged"] and f["control_valid"]
    # centred smoothing: at 1950 mean(1,1,0)=.67 >= .5, at 2000 mean(1,0,0)=.33
    assert f["onset"] == 1950
    # smoothed CM: at 2000 mean(1,1,-1)=.33 is the last value >= 0
    assert f["cm_cross"] == 2000 and f["cross_lag"] == 50 and f["cross_timing_ok"]
    assert f["final"] == f["conflict_final"] == 0.0 and f["margin_valid"] and f["cm_valid"]
    old = family_figures(steps, conflict, agree, cm, Classifier(operators=UNGROK_0_1))
    assert old["label"] == DISPLACED and old["onset"] == 2000 and old["cm_cross"] == 2100  # trailing, lags


def test_survivor_and_never():
    steps = np.arange(0, 2001, 50)
    up = np.clip((steps - 100) / 400, 0, 1)
    f = family_figures(steps, up, np.ones(len(steps)), up * 2)
    # the paper always defines onset and crossing: for a survivor both are the last step
    assert f["label"] == RECOVERED and f["onset"] == 2000 and f["cm_cross"] == 2000
    old = family_figures(steps, up, np.ones(len(steps)), up * 2, Classifier(operators=UNGROK_0_1))
    assert old["onset"] is None and old["cm_cross"] is None
    g = family_figures(steps, np.full(len(steps), 0.4), np.ones(len(steps)), np.zeros(len(steps)))
    assert g["label"] == NEVER and not g["margin_valid"] and g["onset"] is None and g["cm_cross"] == 2000


def test_cm_is_optional():
    steps = np.arange(0, 2001, 50)
    f = family_figures(steps, np.ones(len(steps)), np.ones(len(steps)))
    assert f["label"] == RECOVERED and f["cm_final"] is None and f["cm_cross"] is None
    assert f["cm_valid"] is None and f["margin_valid"] is False and f["cross_timing_ok"] is None


def test_invalid_control():
    steps = np.arange(0, 2001, 50)
    agree = np.where(steps < 1000, 1.0, 0.7)
    f = family_figures(steps, np.ones(len(steps)), agree, np.ones(len(steps)), Classifier())
    assert not f["control_valid"]


def test_crossing_within_the_registered_window():
    assert crossing_within(1000, 1000) and crossing_within(500, 1000) and crossing_within(2000, 1000)
    assert crossing_within(499, 1000) is False and crossing_within(2001, 1000) is False
    assert crossing_within(None, 1000) is None and crossing_within(1000, None) is None
    assert crossing_within(1500, 1000, lo=0.9, hi=1.1) is False


def test_classifier_is_validated_on_construction():
    with pytest.raises(ValueError, match="operators"):
        Classifier(operators="mine")
    with pytest.raises(ValueError, match="window"):
        Classifier(window=0)
    with pytest.raises(ValueError, match="final_frac"):
        Classifier(final_frac=0.0)
    assert Classifier(window=3.0).window == 3 and isinstance(Classifier(window=3.0).window, int)  # type: ignore[arg-type]
