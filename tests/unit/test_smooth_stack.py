"""The classifier's smoothing and finals over a stack of series (a bootstrap's resamples at once)
equal the one-series-at-a-time loop bit for bit: the verdict's confidence intervals must not move
because they are computed faster."""

import numpy as np
import pytest

from runner.analysis.verdicts import bootstrap_ci
from runner.trajectory import UNGROK_0_1, Classifier, cm_final_of, final_of, smooth, smoothed


def _loop_smooth(x, window, centred):
    """The reference: numpy's mean of each position's own window, one position at a time."""
    x = np.asarray(x, float)
    ahead = (window - 1) // 2 if centred else 0
    return np.array([x[max(0, i + ahead + 1 - window): i + ahead + 1].mean() for i in range(len(x))])


def _series(rng, shape):
    return rng.normal(size=shape) * 10 ** rng.uniform(-3, 3)


@pytest.mark.parametrize("centred", [True, False])
def test_smooth_equals_the_loop_bit_for_bit(centred):
    rng = np.random.default_rng(0)
    for _ in range(300):
        window, n = int(rng.integers(1, 25)), int(rng.integers(1, 70))
        x = _series(rng, n)
        assert np.array_equal(smooth(x, window, centred), _loop_smooth(x, window, centred))
        stack = _series(rng, (7, n))
        want = np.stack([_loop_smooth(r, window, centred) for r in stack])
        assert np.array_equal(smooth(stack, window, centred), want)
        assert np.array_equal(smooth(np.asfortranarray(stack), window, centred), want)  # any memory order


def test_smooth_by_hand():
    assert smooth(np.array([0, 3, 6, 9.0]), 3).tolist() == [1.5, 3, 6, 7.5]
    assert smooth(np.array([[0, 3, 6, 9.0], [1, 1, 1, 4]]), 3, centred=False).tolist() == [[0, 1.5, 3, 6], [1, 1, 1, 2]]


@pytest.mark.parametrize("operators", [None, UNGROK_0_1])
def test_finals_of_a_stack_equal_each_row(operators):
    k = Classifier() if operators is None else Classifier(operators=operators)
    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(3, 130))
        steps = np.arange(n) * 50
        stack = _series(rng, (40, n))
        assert np.array_equal(smoothed(stack, k).max(axis=1), [smoothed(r, k).max() for r in stack])
        assert np.array_equal(final_of(stack, k), [final_of(r, k) for r in stack])
        assert np.array_equal(cm_final_of(steps, stack, k), [cm_final_of(steps, r, k) for r in stack])
        assert isinstance(final_of(stack[0], k), float) and isinstance(cm_final_of(steps, stack[0], k), float)


def test_bootstrap_ci_equals_the_per_resample_loop():
    rng = np.random.default_rng(2)
    k = Classifier()
    steps = np.arange(101) * 50
    diff = rng.normal(size=(101, 64)).cumsum(0) * 0.1
    got = bootstrap_ci(steps, diff > 0, diff, k, seed=7, n_boot=400)
    r = np.random.default_rng(7)  # the same resamples, then one series at a time
    keep = steps >= k.start_step
    correct = (diff > 0)[keep].astype(float)
    counts = r.multinomial(64, np.full(64, 1 / 64), size=400)
    acc, cm = counts @ correct.T / 64, counts @ diff.T / 64
    q = lambda x: [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]  # noqa: E731
    assert got["peak_ci"] == q([smoothed(a, k).max() for a in acc])
    assert got["final_ci"] == q([final_of(a, k) for a in acc])
    assert got["cm_final_ci"] == q([cm_final_of(steps, c, k) for c in cm])
