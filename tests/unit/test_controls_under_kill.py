"""The agree control under a class-conditional kill (runner.analysis.agree_control), the dose-response
table's INTERVENTION-INVALID mark, and the n-gram baseline row of the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import interventions  # noqa: F401  (registers kill and rescue)
from runner.analysis.agree_control import untouched_classes
from runner.analysis.dose_response import dose_response
from runner.analysis.gates import intervention_cells
from runner.analysis.prereg import InterventionGate, unregistered
from runner.analysis.verdicts import run_verdict
from runner.scoring import aggregate, battery_for
from runner.store import RunStore
from tests.helpers import tiny_run_config

FAM = "pronoun_gender"


def _run_dir(root: Path, name: str, dose: str, n_evals: int = 12) -> Path:
    """A run whose conflict items are all right, agree items of masculine cues always right and of
    feminine cues always wrong (what a feminine kill does to the built-in battery's agree items)."""
    cfg = tiny_with_dose(dose)
    items = battery_for(cfg)
    run = root / name
    run.mkdir(parents=True)
    diff = np.array([-1.0 if it.condition == "agree" and it.correct == " she" else 1.0 for it in items])
    store = RunStore(run / "store.zarr")
    store.init_layout(items, sorted(aggregate(items, diff, -diff)), {"run_id": name})
    for i in range(n_evals):
        store.append(i * 50, 1.0, 1e-3, items, diff / 2, -diff / 2, aggregate(items, diff / 2, -diff / 2))
    store.mark_complete()
    (run / "config.json").write_text(cfg.model_dump_json())
    (run / "run.json").write_text(json.dumps({"run_id": name}))
    return run


def tiny_with_dose(dose):
    cfg = tiny_run_config(probes={"families": (FAM,)})
    return cfg.model_copy(update={"dose": dose}) if dose != "none" else cfg


def test_untouched_classes_by_dose():
    assert untouched_classes(tiny_with_dose("kill:1.0"), FAM) == ("masculine",)
    assert untouched_classes(tiny_with_dose("kill:ratio=1"), FAM) == ("masculine",)
    assert untouched_classes(tiny_with_dose("none"), FAM) is None
    assert untouched_classes(tiny_with_dose("kill-contested:0.5"), FAM) is None  # edits both classes
    assert untouched_classes(tiny_with_dose("rescue:1"), FAM) is None


def test_kill_control_reads_the_untargeted_agree_items_only(tmp_path):
    killed = run_verdict(_run_dir(tmp_path, "k", "kill:1.0"), unregistered())["families"][FAM]
    assert killed["control_valid"] and killed["agree_final"] == pytest.approx(1.0)
    assert not killed["control_valid_all"] and killed["agree_final_all"] < 0.8  # the pooled control fails
    assert "masculine" in killed["control_items"]
    # undosed, and a dose that edits both classes: the pooled control, unchanged
    for name, dose in (("u", "none"), ("c", "kill-contested:0.5")):
        f = run_verdict(_run_dir(tmp_path, name, dose), unregistered())["families"][FAM]
        assert not f["control_valid"] and "control_items" not in f
        assert f["agree_final"] == pytest.approx(killed["agree_final_all"])


def _dr_run(name, dose, seed, final, gate_ok=True):
    ctl = {"label": "RECOVERED" if gate_ok else "DISPLACED", "control_valid": True, "final": 1.0, "cm_final": 2.0}
    return {"run": name, "corpus": "stories-an", "budget": "packed", "seed": seed, "dose": dose, "complete": True,
            "sealed": False, "families": {"a_an": {"final": final, "cm_final": 2 * final - 1, "label": "X",
                                                   "control_valid": True},
                                          "pronoun_gender": ctl, "number_agreement": ctl}}


def test_dose_response_marks_a_voided_level_and_leaves_it_out_of_rho():
    runs = [_dr_run("n1", "none", 1, 0.95), _dr_run("h1", "kill:0.5", 1, 0.7),
            _dr_run("b1", "kill:0.75", 1, 0.9, gate_ok=False), _dr_run("f1", "kill:1.0", 1, 0.1)]
    cells = intervention_cells(runs, InterventionGate(families=("pronoun_gender", "number_agreement"), seeds="all",
                                                tolerance=1))
    dr = dose_response(runs, lambda r, f: None, cells=cells)
    g = next(g for g in dr["groups"] if g["family"] == "a_an")
    void = {lv["dose_name"]: lv["void"] for lv in g["levels"]}
    assert void["kill:0.75"]["gate"] == "intervention-invalid" and void["kill:0.75"]["runs"] == ["b1"]
    assert void["kill:0.75"]["families"] == ["number_agreement", "pronoun_gender"]
    assert void["none"] is None and void["kill:0.5"] is None
    assert g["rho_final"] == pytest.approx(-1.0)  # 0.95, 0.7, 0.1 over the scored levels (0.9 left out)
    assert next(a for a in dr["asymmetry"] if a["family"] == "a_an")["monotone_final"]
    # a gate control family's own figures stay scored in that cell
    ctl = next(g for g in dr["groups"] if g["family"] == "pronoun_gender")
    assert all(lv["void"] is None for lv in ctl["levels"])
    # without the gate nothing is voided and the 0.9 counts
    plain = next(g for g in dose_response(runs, lambda r, f: None)["groups"] if g["family"] == "a_an")
    assert all(lv["void"] is None for lv in plain["levels"]) and plain["rho_final"] != pytest.approx(-1.0)


def test_report_table_shows_the_mark_instead_of_numbers():
    from runner.report.html import INVALID_MARK, _level_cells

    lv = {"mean_final": 0.123456, "mean_cm_final": -0.5, "labels": ["DISPLACED"], "controls_valid": True,
          "void": {"gate": "intervention-invalid", "families": ["number_agreement", "pronoun_gender"]}}
    cells = _level_cells(lv)
    assert INVALID_MARK in cells and "0.123" not in cells and "number_agreement, pronoun_gender" in cells
    assert "0.123" in _level_cells({**lv, "void": None}) and INVALID_MARK not in _level_cells({**lv, "void": None})


def test_report_shows_the_ngram_baseline_row(tmp_path):
    from runner.report.baseline import baseline_rows, baseline_section
    from runner.report.tables import baseline_table

    run = tmp_path / "r1"
    run.mkdir()
    assert baseline_rows(run) == [] and baseline_section([run], []) == [] and baseline_table(run) is None
    (run / "baseline.json").write_text(json.dumps({
        "run": "r1", "alpha": 0.4, "orders": [2, 5], "rows_seen": 10, "tokens_seen": 100,
        **{f"order{n}": {f"{FAM}/acc_conflict_heldout": 0.25 * n / 5, f"{FAM}/acc_agree_heldout": 0.4375,
                         f"{FAM}/cm": -0.5, "control_valid": {FAM: False}} for n in (2, 5)}}))
    model = {"run": "r1", "families": {FAM: {"label": "RECOVERED", "final": 0.96875, "agree_final": 1.0}}}
    rows = baseline_rows(run, model["families"])
    assert [(r["order"], r["conflict"]) for r in rows] == [(2, 0.1), (5, 0.25)]
    (html,) = baseline_section([run], [model])
    assert "N-gram baseline" in html and "0.438" in html and "INVALID" in html and "0.969" in html
    assert baseline_table(run, model) is not None
