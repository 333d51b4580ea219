"""Planning a sweep (cluster.sweep_plan): pure, no Ray, nothing written."""

import pytest
import zarr

from cluster.sweep_callbacks import CallbackList, ManifestWriter
from cluster.sweep_plan import SweepResult, plan_sweep, prepare_sweep, stream_key
from runner.grid import GridError, load_grid
from tests.helpers import tiny_grid_spec

CORPORA = '[{name = "web", doses = ["none"]}, {name = "stories", doses = ["none", "kill:1.0"]}]'


def _spec(tmp_path, **kw):
    return tiny_grid_spec(tmp_path / "g.toml", seeds=(1, 2), corpora=CORPORA, **kw)


def _mark_complete(sweep_dir, run_id):
    root = zarr.open_group(str(sweep_dir / "store.zarr"), mode="a", use_consolidated=False)
    root.require_group(f"runs/{run_id}").attrs["complete"] = True


def test_plan_lists_cells_in_expansion_order_and_writes_nothing(tmp_path):
    g = _spec(tmp_path)
    plan = plan_sweep(g, tmp_path / "sw")
    assert not (tmp_path / "sw").exists()
    labels = [c.label for c in plan.to_run]
    assert labels == ["web/packed/none/s1", "web/packed/none/s2", "stories/packed/none/s1",
                      "stories/packed/none/s2", "stories/packed/kill:1.0/s1", "stories/packed/kill:1.0/s2"]
    assert [c.run_id for c in plan.cells] == [c.run_id for c in load_grid(g).cells()]
    assert plan.skipped == () and plan.reused == {}
    # one stream per (corpus, dose), shared by seeds: the first seed's cell builds it
    assert [c.label for c in plan.streams] == ["web/packed/none/s1", "stories/packed/none/s1",
                                               "stories/packed/kill:1.0/s1"]
    assert len({stream_key(c.config) for c in plan.to_run}) == 3
    assert plan.train_options == {"num_cpus": 1, "num_gpus": 0, "resources": None, "max_retries": 3,
                                  "retry_exceptions": False}
    assert plan.stream_options == {"num_cpus": 1, "resources": None, "max_retries": 3}
    assert not plan.multi_gpu


def test_complete_cell_is_skipped_and_a_rerun_plans_nothing_new(tmp_path):
    g, d = _spec(tmp_path), tmp_path / "sw"
    prepare_sweep(g, d)
    first = plan_sweep(g, d)
    _mark_complete(d, first.cells[2].run_id)
    plan = plan_sweep(g, d)
    assert [c.label for c in plan.skipped] == ["stories/packed/none/s1"]
    assert first.cells[2] not in plan.to_run and len(plan.to_run) == 5
    assert "stories/packed/none/s1" not in [c.label for c in plan.streams]  # s2 builds that stream now
    for c in plan.to_run:
        _mark_complete(d, c.run_id)
    again = plan_sweep(g, d)
    assert again.to_run == () and again.streams == () and len(again.skipped) == 6


def test_reuse_plans_a_copy_of_cells_complete_in_a_source(tmp_path):
    g, src, d = _spec(tmp_path), tmp_path / "src", tmp_path / "sw"
    prepare_sweep(g, src)
    cell = plan_sweep(g, src).cells[0]
    _mark_complete(src, cell.run_id)
    (src / "runs" / cell.run_id).mkdir(parents=True)
    prepare_sweep(g, tmp_path / "elsewhere")  # a sweep that holds nothing complete
    plan = plan_sweep(g, d, [tmp_path / "elsewhere", src])
    assert plan.reused == {cell.run_id: str(src)} and plan.skipped == ()
    assert cell not in plan.to_run and len(plan.to_run) == 5
    assert not d.exists()
    with pytest.raises(GridError, match="--reuse .*/srcc: not a sweep folder"):  # a typo is not ignored
        plan_sweep(g, d, [tmp_path / "srcc"])


GOOD = 'name = "x"\n[axes]\ncorpora = ["web"]\nbudgets = ["packed"]\nseeds = [1]\n'


BAD = [GOOD.replace("[1]", "[1, 1]"), GOOD + "bogus = 2\n", GOOD + "[resources]\nnum_cpus = 0\n"]


@pytest.mark.parametrize("text", BAD)
def test_bad_spec_raises_before_anything_is_written(tmp_path, text):
    g = tmp_path / "bad.toml"
    g.write_text(text)
    d = tmp_path / "sw"
    d.mkdir()
    with pytest.raises(GridError):
        plan_sweep(g, d)
    assert list(d.iterdir()) == []


def test_a_folder_of_another_grid_is_refused(tmp_path):
    prepare_sweep(_spec(tmp_path), tmp_path / "sw")
    other = tiny_grid_spec(tmp_path / "other.toml", seeds=(7,))
    with pytest.raises(GridError, match="different grid spec"):
        plan_sweep(other, tmp_path / "sw")


def test_manifest_writer_records_states_and_last_run(tmp_path):
    g, d = _spec(tmp_path), tmp_path / "sw"
    sw = prepare_sweep(g, d)
    _mark_complete(d, sw.cells[0].run_id)
    plan = plan_sweep(g, d)
    cb = CallbackList([ManifestWriter(sw), object()])  # a callback may define no hook at all
    cb.on_plan(plan)
    a, b = plan.to_run[0], plan.to_run[1]
    cb.on_cell_start(a)
    cb.on_cell_done(a, {"node_id": "n1", "seconds": 1.234, "run_id": a.run_id})
    cb.on_cell_failed(b, "Traceback ... boom")
    res = SweepResult.of(plan, {a.run_id: {"seconds": 1.234}}, {b.run_id: "boom"}, wall=2.0, cluster_cpus=2)
    cb.on_end(res)
    man = sw.manifest()
    states = {c["label"]: c for c in man["cells"]}
    assert states[sw.cells[0].label]["state"] == "complete" and states[sw.cells[0].label]["skipped"]
    assert states[a.label]["state"] == "complete" and states[a.label]["seconds"] == 1.23
    assert states[b.label]["state"] == "failed" and states[b.label]["error"] == "Traceback ... boom"
    assert states[plan.to_run[2].label]["state"] == "pending"
    last = man["last_run"]
    assert list(last) == ["sweep", "cells", "ran", "skipped", "failed", "wall_seconds", "sum_run_seconds",
                          "workers", "efficiency", "finished_utc"]
    assert (last["ran"], last["skipped"], last["failed"], last["workers"]) == (1, 1, [b.label], 1)
    assert last["efficiency"] == round(1.23 / 2.0, 3)
    assert res.completed == (a.label,) and res.skipped == (sw.cells[0].label,) and res.ran == 1
