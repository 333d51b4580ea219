import numpy as np
import pytest

from runner.data.streams import BudgetError, DataPlan


def _rows(n, tokens=10, width=16):
    r = np.zeros((n, width), dtype=np.int32)
    r[:, :tokens] = 5
    return r


def test_packed_never_repeats_and_is_a_pure_function_of_step():
    plan = DataPlan.for_budget("packed", _rows(100), 0, steps=10, batch_size=8, seed=3, n_params=1)
    seen = np.concatenate([plan.indices(t) for t in range(10)])
    assert len(set(seen)) == 80
    again = DataPlan.for_budget("packed", _rows(100), 0, steps=10, batch_size=8, seed=3, n_params=1)
    assert np.array_equal(again.indices(7), plan.indices(7))


def test_dn_budget_unique_tokens_and_epochs():
    # dn2 with 50 params -> 100 unique tokens -> 10 rows of 10 tokens
    plan = DataPlan.for_budget("dn2", _rows(100), 0, steps=5, batch_size=4, seed=0, n_params=50)
    assert plan.unique_rows == 11 or plan.unique_rows == 10
    first_epoch = np.concatenate([plan.indices(t) for t in range(5)])[: plan.unique_rows]
    assert sorted(first_epoch) == list(range(plan.unique_rows))


def test_packed_too_small_names_fix():
    with pytest.raises(BudgetError, match="n_stories >= 80"):
        DataPlan.for_budget("packed", _rows(50), 0, steps=10, batch_size=8, seed=0, n_params=1)
