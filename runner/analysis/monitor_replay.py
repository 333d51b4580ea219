"""What a live monitor would have said on a finished run (offline replay)."""

from __future__ import annotations

from runner.store import open_run_store
from runner.train.monitor import TrendConfig, replay
from runner.trajectory import RECOVERED, Classifier, figures_from_store


def replay_run(run_dir, family: str, k: TrendConfig = TrendConfig(), n: int = 64,
               classifier: Classifier = Classifier()) -> dict:
    """What a live monitor would have said on a finished run: its frozen probe set's CM
    recomputed from the stored per-item log-probs, replayed through :func:`replay`; with the
    run's label and collapse onset under ``classifier``, the lead time (onset - first warning) or
    a false alarm (a warning on a run that ends RECOVERED)."""

    store = open_run_store(run_dir)
    cond, split = store.item_labels(family, "condition"), store.item_labels(family, "split")
    idx = [i for i, (c, s) in enumerate(zip(cond, split)) if c == "conflict" and s == "heldout"][:n]
    diff = store.series(f"{family}/logp_correct")[:, idx] - store.series(f"{family}/logp_distractor")[:, idx]
    steps = store.series(f"{family}/step")
    ws = replay(steps, diff.mean(axis=1), k)
    fig = figures_from_store(store, family, k=classifier)
    # the collapse event: the behavioural onset if conflict ends below the onset level (the paper's
    # onset is defined for every run that ever reached it), else the CM zero crossing if CM ends
    # negative (a run whose conflict ends between 0.5 and 0.6), else none
    collapsed = fig.get("final") is not None and fig["final"] < classifier.onset_level
    onset = fig.get("onset") if collapsed else None
    crossed = fig.get("cm_final") is not None and fig["cm_final"] < 0
    event = onset if onset is not None else (fig.get("cm_cross") if crossed else None)
    before = [w["step"] for w in ws if event is not None and w["step"] <= event]
    return {"run": str(run_dir), "label": fig.get("label"), "onset": onset, "cm_cross": fig.get("cm_cross"),
            "event": "onset" if onset is not None else ("cm_cross" if event is not None else None),
            "warning_steps": [w["step"] for w in ws], "warnings": ws,
            # lead: from the last warning at or before the collapse event (the alarm that preceded it)
            "lead": (event - before[-1]) if before else None,
            "false_alarm": bool(ws) and fig.get("label") == RECOVERED}
