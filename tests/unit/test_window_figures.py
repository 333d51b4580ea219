"""The descriptive window figures of a run dosed inside a window of steps (did the rule hold while
the dose flowed?), checked by hand on a trajectory written into a real store."""

from __future__ import annotations

import json

import pytest

from runner.store import open_run_store
from runner.trajectory import summary_of, window_figures
from tests.unit.fake_runs import make_run

# steps 0, 50, ..., 600; multiples of 1/8 (8 heldout conflict items), so accuracies are exact
CONFLICT = [0.5, 0.625, 0.75, 1, 1, 1, 1, 0.875, 0.5, 0.25, 0.125, 0.125, 0.125]


def test_window_figures_by_hand(tmp_path):
    run = make_run(tmp_path, "r", CONFLICT)
    cfg = {"dose": "rescue:1", "intervention": {"start_step": 200, "end_step": 400}}
    w = window_figures(open_run_store(run), cfg)
    assert w is not None and (w["start_step"], w["end_step"]) == (200, 400)
    f = w["families"]["pronoun_gender"]
    # conflict from step 100 on, centred mean of 3: 150 -> (0.75+1+1)/3; inside 200..350: 1, 1, 0.9583, 0.7917
    assert f["conflict_before"] == pytest.approx(2.75 / 3)
    assert f["conflict_mean"] == pytest.approx((1 + 1 + 2.875 / 3 + 2.375 / 3) / 4)
    assert f["conflict_min"] == f["conflict_end"] == pytest.approx(2.375 / 3)
    # CM = 2 x accuracy - 1, smoothed over all evals: at 350, raw 1, 0.75, 0 -> 0.5833
    assert f["cm_end"] == pytest.approx(1.75 / 3)


def test_no_window_figures_without_a_window(tmp_path):
    run = make_run(tmp_path, "r", CONFLICT)
    store = open_run_store(run)
    assert window_figures(store, {"dose": "none", "intervention": {"start_step": 200}}) is None
    assert window_figures(store, {"dose": "rescue:1", "intervention": {"start_step": 0, "end_step": None}}) is None
    open_ended = window_figures(store, {"dose": "rescue:1", "intervention": {"start_step": 300}})
    assert open_ended is not None and open_ended["end_step"] is None
    assert summary_of(run)["window"] is None  # the fake run's config is undosed


def test_summary_reads_the_window_from_the_run_config(tmp_path):
    run = make_run(tmp_path, "r", CONFLICT)
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(dose="rescue:1", intervention={**cfg.get("intervention", {}), "start_step": 400})
    (run / "config.json").write_text(json.dumps(cfg))
    w = summary_of(run)["window"]
    assert w["start_step"] == 400 and w["families"]["pronoun_gender"]["conflict_end"] == pytest.approx(0.125)


def test_report_section_lists_windowed_runs_only(tmp_path):
    from runner.report.windows import window_rows, window_section

    plain = make_run(tmp_path, "plain", CONFLICT)
    dosed = make_run(tmp_path, "dosed", CONFLICT)
    cfg = json.loads((dosed / "config.json").read_text())
    cfg.update(dose="rescue:1", intervention={**cfg.get("intervention", {}), "start_step": 200, "end_step": 400})
    (dosed / "config.json").write_text(json.dumps(cfg))
    assert window_rows(plain) == [] and window_section([plain], []) == []
    verdict_runs = [{"run": "dosed", "families": {"pronoun_gender": {"label": "DISPLACED", "final": 0.125}}}]
    (row,) = window_rows(dosed, verdict_runs[0]["families"])
    assert (row["start_step"], row["end_step"], row["label"], row["final"]) == (200, 400, "DISPLACED", 0.125)
    assert row["conflict_end"] == pytest.approx(2.375 / 3)
    (page,) = window_section([plain, dosed], verdict_runs)
    assert "dosed" in page and "plain" not in page and "200–400" in page and "0.792" in page
