"""RunStore append/truncate on a real zarr store, and the RunDir layout of a run folder."""

import json

import numpy as np
import pytest

from runner.model import weights_path
from runner.store import RunDir, RunStore, is_run_dir, open_run_store, store_location
from runner.world.batteries import ProbeItem


def _items() -> list[ProbeItem]:
    out = []
    for fam, n in (("fam_a", 3), ("fam_b", 2)):
        for i in range(n):
            out.append(ProbeItem(family=fam, condition="conflict" if i % 2 else "agree", probe="p",
                                 split="heldout", template_id=f"t{i}", prefix="the cat", correct=" sat",
                                 distractor=" ran", item_id=f"{fam}-{i}"))
    return out


def _store(tmp_path, items, group=""):
    st = RunStore(tmp_path / "store.zarr", group)
    st.init_layout(items, ["fam_a/cm", "fam_a/acc_conflict_heldout", "fam_b/cm"], {"run_id": "r"})
    return st


def _append(st, items, step, rng):
    lpc, lpd = rng.normal(size=len(items)), rng.normal(size=len(items))
    st.append(step, float(rng.normal()), 1e-3, items, lpc, lpd,
              {"fam_a/cm": float(step), "fam_a/acc_conflict_heldout": 0.5, "fam_b/cm": -float(step)})
    return lpc, lpd


def _lengths(st) -> dict[str, int]:
    return {name: arr.shape[0] for name, arr in st._step_arrays()}


def test_append_then_truncate_keeps_every_array_aligned(tmp_path):
    rng = np.random.default_rng(0)
    items = _items()
    st = _store(tmp_path, items)
    rows = {step: _append(st, items, step, rng) for step in (0, 20, 40)}
    assert list(st.steps()) == [0, 20, 40] and st.n_complete == 3
    assert set(_lengths(st).values()) == {3}

    st.truncate(20)
    assert list(st.steps()) == [0, 20] and st.n_complete == 2 and st.attrs["complete"] is False
    lengths = _lengths(st)
    assert "fam_a/logp_correct" in lengths and "fam_b/cm" in lengths and "train/loss" in lengths
    assert set(lengths.values()) == {2}, lengths
    np.testing.assert_array_equal(st.series("fam_a/step"), [0, 20])
    np.testing.assert_array_equal(st.series("fam_a/cm"), np.float32([0, 20]))
    np.testing.assert_array_equal(st.series("fam_b/logp_correct")[1], np.float32(rows[20][0][3:]))

    # a step not after the last stored one is refused, and nothing is written
    for step in (20, 10):
        with pytest.raises(ValueError, match="not after the last stored step 20"):
            _append(st, items, step, rng)
    assert set(_lengths(st).values()) == {2}

    # appending after a truncation continues from the kept rows
    lpc, _ = _append(st, items, 40, rng)
    assert list(st.steps()) == [0, 20, 40] and set(_lengths(st).values()) == {3}
    np.testing.assert_array_equal(st.series("fam_a/logp_correct")[2], np.float32(lpc[:3]))
    np.testing.assert_array_equal(st.series("fam_b/cm"), np.float32([0, -20, -40]))

    # a reader opening the store afresh sees the same rows
    again = RunStore(tmp_path / "store.zarr")
    assert list(again.steps()) == [0, 20, 40] and again.families() == ["fam_a", "fam_b"]
    assert again.metrics("fam_a") == ["acc_conflict_heldout", "cm"]


def test_run_dir_layout(tmp_path):
    run = RunDir(tmp_path / "runs" / "r1")
    p = run.path
    assert (run.config, run.meta, run.tokenizer) == (p / "config.json", p / "run.json", p / "tokenizer.json")
    assert run.weights(40) == p / "weights" / "step_0000040.safetensors" == weights_path(p, 40)
    assert run.checkpoints == p / "checkpoints"
    assert (run.summary, run.trajectory_png) == (p / "summary.json", p / "trajectory.png")
    assert run.name == "r1" and run.weight_files() == [] and not run.is_run() and not is_run_dir(p)

    # own store: <run>/store.zarr at its root; before run.json exists that is also the fallback
    assert run.planned_store() == (p / "store.zarr", "")
    assert run.store_record() == {"path": "store.zarr", "group": ""}
    assert store_location(p) == (p / "store.zarr", "")
    with pytest.raises(FileNotFoundError, match="no scores yet"):
        run.open_store()

    # a sweep's shared store: group runs/<run_id>, recorded relative to the run in run.json
    shared = tmp_path / "sweep" / "store.zarr"
    assert run.planned_store(shared) == (shared.resolve(), "runs/r1")
    rec = run.store_record(shared)
    assert rec == {"path": "../../sweep/store.zarr", "group": "runs/r1"}
    p.mkdir(parents=True)
    run.config.write_text("{}")
    run.meta.write_text(json.dumps({"run_id": "r1", "store": rec}))
    assert run.is_run() and is_run_dir(p)
    assert run.store_location() == (shared.resolve(), "runs/r1") == store_location(p)

    items = _items()
    st = _store(shared.parent, items, "runs/r1")  # shared.parent / "store.zarr" == shared
    _append(st, items, 0, np.random.default_rng(1))
    for opened in (run.open_store(), open_run_store(p)):
        assert opened.group_path == "runs/r1" and list(opened.steps()) == [0]

    for step in (20, 0):
        run.weights(step).parent.mkdir(parents=True, exist_ok=True)
        run.weights(step).write_bytes(b"")
    assert run.weight_files() == [run.weights(0), run.weights(20)]
