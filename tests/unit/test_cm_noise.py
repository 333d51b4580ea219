"""The descriptive margin figures: jitter after the crossing, and the crossing lag in evaluations."""

import numpy as np

from runner.trajectory import family_figures


def test_cm_noise_and_lag_in_evaluations():
    steps = np.arange(0, 2100, 100)
    # rule learned by step 300, lost from step 1200: conflict and CM both fall there
    conflict = np.where(steps < 300, 0.2, np.where(steps < 1200, 0.95, 0.05))
    agree = np.full(len(steps), 0.97)
    cm = np.where(steps < 1200, 2.0, -1.0)
    cm[steps >= 1200] += np.array([0.0, 0.2, 0.0, 0.2, 0.0, 0.2, 0.0, 0.2, 0.0])  # jitter of 0.2 after the fall
    f = family_figures(steps, conflict, agree, cm)
    assert f["cm_cross"] is not None and f["onset"] is not None
    after = cm[steps > f["cm_cross"]]
    assert f["cm_noise"] == np.median(np.abs(np.diff(after)))
    assert abs(f["cm_noise"] - 0.2) < 1e-12
    assert f["cross_lag_evals"] == (f["cm_cross"] - f["onset"]) / 100


def test_no_crossing_means_no_noise_figure():
    steps = np.arange(0, 1100, 100)
    f = family_figures(steps, np.full(11, 0.95), np.full(11, 0.97), np.full(11, 2.0))
    assert f["cm_noise"] is None
    f2 = family_figures(steps, np.full(11, 0.95), np.full(11, 0.97), None)
    assert f2["cm_noise"] is None
