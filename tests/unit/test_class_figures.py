"""The classifier on each cue class (runner.analysis.agree_control.class_figures): a run that kept
the rule in one class and lost it in the other reads RECOVERED and a collapse by class, near 0.5
pooled; the run plot draws each class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runner.analysis.agree_control import class_figures
from runner.analysis.prereg import unregistered
from runner.analysis.verdicts import run_verdict
from runner.scoring import aggregate, battery_for
from runner.store import RunStore, open_run_store
from runner.trajectory import Classifier
from tests.helpers import tiny_run_config

FAM = "pronoun_gender"


def _split_run(root: Path) -> Path:
    """Conflict items with a feminine cue (correct *she*) always right; masculine ones right for
    the first 6 of 12 evals (steps 0-250), then wrong; agree items right."""
    cfg = tiny_run_config(probes={"families": (FAM,)})
    items = battery_for(cfg)
    masc = np.array([it.condition == "conflict" and it.correct == " he" for it in items])
    run = root / "split"
    run.mkdir(parents=True)
    store = RunStore(run / "store.zarr")
    store.init_layout(items, sorted(aggregate(items, np.ones(len(items)), -np.ones(len(items)))), {"run_id": "split"})
    for i in range(12):
        diff = np.where(masc & (i >= 6), -1.0, 1.0)
        store.append(i * 50, 1.0, 1e-3, items, diff / 2, -diff / 2, aggregate(items, diff / 2, -diff / 2))
    store.mark_complete()
    (run / "config.json").write_text(cfg.model_dump_json())
    (run / "run.json").write_text(json.dumps({"run_id": "split"}))
    return run


def test_class_figures_split_a_one_class_collapse(tmp_path):
    run = _split_run(tmp_path)
    cfg = tiny_run_config(probes={"families": (FAM,)})
    by = class_figures(open_run_store(run), cfg, FAM, Classifier())
    assert by is not None and set(by) == {"feminine", "masculine"}
    fem, masc = by["feminine"], by["masculine"]
    assert fem["label"] == "RECOVERED" and fem["final"] == pytest.approx(1.0) and fem["cm_cross"] == 550
    # masculine: right through step 250, wrong from 300; smoothed (centred, 3) accuracy >= 0.5 last at 250
    # and CM (+1 then -1) >= 0 last at 250 too: onset and crossing coincide
    assert masc["label"] == "DISPLACED" and masc["final"] == pytest.approx(0.0)
    assert masc["onset"] == masc["cm_cross"] == 250 and masc["cross_lag"] == 0
    f = run_verdict(run, unregistered())["families"][FAM]
    assert f["by_class"] == by
    assert 0.3 < f["final"] < 0.7  # pooled: the two classes averaged


def test_the_run_plot_draws_each_class(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runner.report.plots import _class_curves, _run_config

    run = _split_run(tmp_path)
    store = open_run_store(run)
    fig, ax = plt.subplots()
    _class_curves(ax, store, _run_config(json.loads((run / "config.json").read_text())), FAM,
                  store.series(f"{FAM}/step"))
    lines = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines()}
    plt.close(fig)
    assert set(lines) == {"conflict (heldout, feminine)", "conflict (heldout, masculine)"}
    assert np.all(lines["conflict (heldout, feminine)"] == 1.0)
    assert np.asarray(lines["conflict (heldout, masculine)"]).tolist() == [1.0] * 6 + [0.0] * 6


def test_item_classes_cache_hands_out_copies():
    from runner.analysis import agree_control

    cfg = tiny_run_config(probes={"families": (FAM,)})
    first = agree_control.item_classes(cfg, FAM, "conflict")
    assert set(first.values()) == {"feminine", "masculine"}
    first.clear()  # a caller's edit must not reach the next caller
    again = agree_control.item_classes(cfg, FAM, "conflict")
    assert again and again == {it.item_id: ("feminine" if it.correct == " she" else "masculine")
                               for it in battery_for(cfg) if it.family == FAM and it.condition == "conflict"}
