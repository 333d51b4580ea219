"""Item-level uncertainty of the peak-to-final drop: a template-stratified paired bootstrap.

Per heldout conflict item ``i``, its margin ``m_i(step) = log p(correct) - log p(distractor)``
(summed continuation log-probs, read from the run's store: nothing is recomputed) at the CM peak
and at the final checkpoint. One resample draws, within each template (``template_id``), as many
items as the template has, with replacement; the *same* draw is used at both checkpoints (paired),
and its drop is ``mean m(peak) - mean m(final)`` over the drawn items. 1,000 resamples with a fixed
seed give the percentile 95% interval and the fraction of resamples whose drop is <= 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jaxtyping import Float

from runner.store import open_run_store

N_RESAMPLES = 1000


def paired_bootstrap(m_a: Float[np.ndarray, " item"], m_b: Float[np.ndarray, " item"], strata: np.ndarray,
                     n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Drop ``mean(m_a) - mean(m_b)`` with its stratified paired bootstrap (module docstring)."""
    m_a, m_b, strata = np.asarray(m_a, float), np.asarray(m_b, float), np.asarray(strata)
    rng = np.random.default_rng(seed)
    groups = [np.nonzero(strata == s)[0] for s in sorted(set(strata.tolist()))]
    drops = np.empty(n)
    for b in range(n):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        drops[b] = m_a[idx].mean() - m_b[idx].mean()
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return {"drop": float(m_a.mean() - m_b.mean()), "ci95": [float(lo), float(hi)],
            "p_drop_le_0": float((drops <= 0).mean()), "n_items": int(len(m_a)), "n_strata": len(groups),
            "n_resamples": n, "seed": seed}


def store_margins(run_dir: str | Path, family: str, step: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(store step used, per-item margins, template ids) of the heldout conflict items at the
    store's eval nearest ``step``."""
    st = open_run_store(run_dir)
    steps = np.asarray(st.series(f"{family}/step"))
    i = int(np.argmin(np.abs(steps - step)))
    lpc = np.asarray(st.array(f"{family}/logp_correct")[i])
    lpd = np.asarray(st.array(f"{family}/logp_distractor")[i])
    keep = (st.item_labels(family, "condition") == "conflict") & (st.item_labels(family, "split") == "heldout")
    return int(steps[i]), (lpc - lpd)[keep], st.item_labels(family, "template_id")[keep]


def drop_from_store(run_dir: str | Path, family: str, peak: int, final: int, n: int = N_RESAMPLES,
                    seed: int = 0) -> dict:
    """The peak-to-final drop of a run's family with its bootstrap interval, from the store."""
    s_a, m_a, strata = store_margins(run_dir, family, peak)
    s_b, m_b, _ = store_margins(run_dir, family, final)
    return {"peak_step": s_a, "final_step": s_b, **paired_bootstrap(m_a, m_b, strata, n, seed)}
