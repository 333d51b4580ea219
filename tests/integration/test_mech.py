"""mech on a really trained tiny run: capture into zarr, reopen with xarray, localize, ablate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from mech.capture import (
    _staging_dir,
    capture_location,
    capture_run,
    hook_count,
    open_capture,
)
from mech.localize import localize_run
from mech.names import hook_name
from mech.probes import encode_probes, run_context
from runner.model import load_model
from runner.train import train_run
from tests.helpers import tiny_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_run_config(train={"steps": 60}, schedule={"every": 20}, probes={"n_per_cell": 6, "n_neutral": 3})
    return train_run(cfg, tmp_path_factory.mktemp("mech"), progress=False, log=lambda *_: None)


def test_capture_opens_with_xarray_and_matches_a_fresh_cache(run_dir):
    out = capture_run(run_dir, batch_size=7)
    assert set(out["families"]) == {"pronoun_gender", "number_agreement"}
    store, group = capture_location(run_dir, "pronoun_gender")
    assert group == "mech/pronoun_gender"
    ds = xr.open_zarr(str(store), group=group, consolidated=False)
    assert list(ds["step"].values) == [0, 20, 40, 60]
    assert ds[hook_name("resid_pre")].dims == ("step", "item", "layer", "d_model")
    assert ds[hook_name("result")].dims == ("step", "item", "layer", "head", "d_model")
    assert ds[hook_name("pattern")].dims == ("step", "item", "layer", "head", "key_pos")
    assert ds[hook_name("unembed")].dims == ("step", "item", "answer")
    assert ds[hook_name("resid_post")].dtype == np.float16 and ds[hook_name("unembed")].dtype == np.float32
    arr = zarr.open_group(str(store), mode="r")[group][hook_name("resid_pre")]
    assert arr.chunks[0] == 1  # one checkpoint per chunk
    # the stored rows equal a fresh run_with_cache of the saved weights (float16 tolerance)
    ctx = run_context(run_dir)
    probes = encode_probes([it for it in ctx.items if it.family == "pronoun_gender"], ctx.tokenizer, ctx.bos_id,
                           ctx.cfg.model.n_ctx, ctx.pad_id)
    model = load_model(run_dir, 40)
    _, cache = model.run_with_cache(probes.tokens)
    assert hook_count(model) == 0
    b = torch.arange(probes.n)
    for kind, layer in (("resid_post", 1), ("resid_pre", 0), ("mlp_out", 1)):
        ref = cache[hook_name(kind, layer)][b, probes.pred_pos].numpy()
        got = ds[hook_name(kind)].sel(step=40, layer=layer).values.astype(np.float32)
        np.testing.assert_allclose(got, ref, atol=2e-3 * max(1.0, np.abs(ref).max()), rtol=2e-3)
    ref = cache[hook_name("pattern", 1)][b, :, probes.pred_pos].numpy()
    got = ds[hook_name("pattern")].sel(step=40, layer=1).values[..., : ref.shape[-1]].astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    logits = cache["hook_unembed"] if "hook_unembed" in cache else model(probes.tokens)
    last = logits[b, probes.pred_pos]
    np.testing.assert_allclose(ds[hook_name("unembed")].sel(step=40, answer="correct").values,
                               last[b, probes.correct_id].numpy(), atol=1e-4)
    # per-item coordinates come along
    cap = open_capture(run_dir, "pronoun_gender")
    assert "condition" in cap.coords and set(cap["condition"].values) == {"conflict", "agree", "neutral"}
    # the run's own scores are untouched and nothing is left in staging
    assert not _staging_dir(Path(store), group).exists()


def test_a_preempted_capture_is_invisible_then_resumes(run_dir):
    store, group = capture_location(run_dir, "number_agreement", store=run_dir / "other.zarr", group="g")
    seen = []

    def boom(msg):
        seen.append(msg)
        if len(seen) == 2:
            raise KeyboardInterrupt("preempted")

    with pytest.raises(KeyboardInterrupt):
        capture_run(run_dir, families=["number_agreement"], store=run_dir / "other.zarr", group="g", log=boom)
    assert not (store / group).exists()  # nothing published
    staged = zarr.open_group(str(_staging_dir(store, group)), mode="r")
    assert staged.attrs["n_complete"] == 2 and not staged.attrs["complete"]
    seen.clear()
    out = capture_run(run_dir, families=["number_agreement"], store=run_dir / "other.zarr", group="g",
                      log=seen.append, names_filter=None)
    assert (store / group / "zarr.json").exists()
    assert len(seen) == 4 and out["families"]["number_agreement"]["steps"] == [0, 20, 40, 60]
    ds = xr.open_zarr(str(store), group=group, consolidated=False)
    assert np.isfinite(ds[hook_name("resid_post")].values.astype(np.float32)).all()  # every row written


def test_localize_writes_ranked_table_pngs_and_ablation(run_dir, tmp_path):
    out = localize_run(run_dir, family="pronoun_gender", out_dir=tmp_path, top_k=1)
    res = out["families"]["pronoun_gender"]
    doc = json.loads(Path(out["json"]).read_text())
    assert doc["families"]["pronoun_gender"]["steps"] == [0, 20, 40, 60]
    table = res["table"]
    labels = res["components"]
    assert {r["component"] for r in table} == set(labels) and [r["rank"] for r in table] == list(
        range(1, len(labels) + 1))
    growth = [r["growth"] for r in table]
    assert growth == sorted(growth, reverse=True)
    # DLA terms (heads, MLPs, embeddings, biases) sum to the measured logit difference at every step
    np.testing.assert_allclose(np.asarray(res["dla"]).sum(0), res["ld_conflict"], atol=1e-4)
    for p in out["png"]:
        assert Path(p).stat().st_size > 1000
    assert Path(out["html"]).exists() and "pronoun_gender_dla.png" in Path(out["html"]).read_text()
    ab = res["ablation"]
    assert ab["step"] == 60 and np.isfinite(ab["before"]["cm"])
    for entry in ab["sets"].values():
        for mode in ("zero", "mean"):
            assert entry[f"cm_restored_{mode}"] == pytest.approx(entry[mode]["cm"] - ab["before"]["cm"])
    # the store's CM equals the baseline CM of the ablation check (same definition, no hooks)
    assert ab["before"]["cm"] == pytest.approx(res["cm_store"][-1], abs=1e-4)
    # the run folder itself was not written to
    assert not (run_dir / "mech").exists()


def test_localize_as_a_ray_stage_over_a_folder_of_runs(tmp_path):
    """Every complete run of a folder is one Ray task; each writes only its own mech/ folder."""
    import ray

    from cluster.mech_stage import run_stage
    from cluster.sweep import init_ray

    for seed in (3, 4):
        cfg = tiny_run_config(train={"steps": 60, "seed": seed}, schedule={"every": 20},
                              probes={"n_per_cell": 6, "n_neutral": 3})
        train_run(cfg, tmp_path / "runs", progress=False, log=lambda *_: None)
    init_ray(num_cpus=2)
    try:
        res = run_stage("localize", tmp_path / "runs", family="pronoun_gender", log=lambda *_: None)
    finally:
        ray.shutdown()
    assert len(res) == 2 and not [r for r in res if "error" in r]
    for r in res:
        doc = json.loads(Path(r["json"]).read_text())
        assert Path(r["json"]).parent.parent == Path(r["run"]) and doc["families"]["pronoun_gender"]["table"]
