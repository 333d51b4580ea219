"""The appendix measures on a really trained tiny run: read from the zarr capture, exact
decomposition at every checkpoint, cross-checkpoint patching identities, a planted direction
projected out, and the whole run end to end with its report sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mech.appendix import appendix_run, readouts
from mech.appendix_report import ROWS, compare_section, compare_table, headline, report_section
from mech.capture import capture_run, checkpoint_steps
from mech.crosspatch import components, cross_patch, patched_cm
from mech.decompose import DECOMPOSE_KINDS, decompose_series
from mech.effects import depth_hook, project_out_hooks
from mech.probes import run_context
from mech.runtime import load_weights, scoped_hooks
from mech.source import family_rows
from runner.model import load_model
from runner.scoring import encode_battery
from runner.train import train_run
from tests.helpers import tiny_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_run_config(train={"steps": 60}, schedule={"every": 20}, probes={"n_per_cell": 6, "n_neutral": 3})
    return train_run(cfg, tmp_path_factory.mktemp("appendix"), progress=False, log=lambda *_: None)


def got_kinds(where) -> list[str]:
    import zarr

    return list(zarr.open_group(str(where["store"]), mode="r")["g/mech/pronoun_gender"].attrs["kinds"])  # type: ignore[arg-type]


def _conflict_battery(run_dir, family="pronoun_gender"):
    ctx = run_context(run_dir)
    its = [it for it in ctx.items if it.family == family and it.condition == "conflict" and it.split == "heldout"]
    return encode_battery(its, ctx.tokenizer, ctx.bos_id, ctx.cfg.model.n_ctx, pad_id=ctx.pad_id)


def test_decomposition_from_the_capture_sums_to_the_gap_at_every_checkpoint(run_dir, tmp_path):
    kinds = (*DECOMPOSE_KINDS, "resid_pre", "resid_post")
    where = {"store": tmp_path / "cap.zarr", "group": "g"}
    weights = family_rows(run_dir, "pronoun_gender", kinds, source="weights")
    assert weights.source == "weights"
    with pytest.raises(FileNotFoundError, match="no capture"):
        family_rows(run_dir, "pronoun_gender", kinds, source="capture", **where)
    capture_run(run_dir, families=["pronoun_gender"], names_filter=["resid_pre", "pattern"], **where)
    assert family_rows(run_dir, "pronoun_gender", kinds, **where).source == "weights"  # auto: capture lacks kinds
    got = family_rows(run_dir, "pronoun_gender", kinds, capture_missing=True, **where)  # captures, reads zarr
    assert got.source == "capture" and got.steps == checkpoint_steps(run_dir) == [0, 20, 40, 60]
    assert family_rows(run_dir, "pronoun_gender", kinds, **where).source == "capture"  # auto: the capture serves
    assert "pattern" in got_kinds(where)  # what was there before is kept
    for k in DECOMPOSE_KINDS:
        assert got.arrays[k].dtype == np.float32
        np.testing.assert_allclose(got.arrays[k], weights.arrays[k], atol=1e-5)
    mask = np.array([it.condition == "conflict" and it.split == "heldout" for it in got.probes.items])
    dec = decompose_series(got, readouts(run_dir, got.steps), mask)
    assert max(dec["max_error"]) < 1e-3
    total, parts = np.array(dec["total"]), np.array(dec["direct"]) + np.array(dec["contextual"]) + np.array(dec["bias"])
    np.testing.assert_allclose(parts, total, atol=1e-3)
    np.testing.assert_allclose(np.array(dec["contextual"]),
                               (np.array(dec["attn"]) + np.array(dec["mlp"])).sum(-1), atol=1e-9)
    np.testing.assert_allclose(np.array(dec["heads"]).sum(-1) + np.array(dec["b_O"]), np.array(dec["attn"]), atol=1e-9)
    # the gap is the model's own logit difference at the decision site
    model = load_model(run_dir, 40)
    p = got.probes
    logits = model(p.tokens)[torch.arange(p.n), p.pred_pos]
    gap = (logits[torch.arange(p.n), p.correct_id] - logits[torch.arange(p.n), p.distractor_id]).detach().numpy()
    assert dec["total"][2] == pytest.approx(float(gap[mask].mean()), abs=1e-4)


def test_loading_weights_into_a_built_model_equals_a_fresh_load(run_dir):
    model = load_model(run_dir, 0)
    load_weights(model, run_dir, 60)
    tokens = torch.randint(0, int(model.cfg.d_vocab), (3, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(tokens), load_model(run_dir, 60)(tokens))


def test_patching_a_checkpoint_into_itself_changes_nothing_and_all_components_restore_one(run_dir):
    enc = _conflict_battery(run_dir)
    a = load_model(run_dir, 60)
    same = cross_patch(a, a, enc)
    assert all(r["cm"] == pytest.approx(same["cm_dst"], abs=1e-5) for r in same["components"].values())
    # b: a's blocks perturbed, its readout (embeddings, final norm, unembedding, b_O) kept
    b = load_model(run_dir, 60)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, prm in b.named_parameters():
            if prm.ndim >= 2 and not name.startswith(("tok_embed", "pos", "ln_out", "head")):  # block matrices
                prm.add_(0.3 * torch.randn_like(prm))
    cm_a, cm_b = patched_cm(a, a, enc, None), patched_cm(b, b, enc, None)
    assert abs(cm_a - cm_b) > 1e-3
    cm_all = patched_cm(a, b, enc, components(b))
    assert (cm_all - cm_b) / (cm_a - cm_b) == pytest.approx(1.0, abs=1e-4)


def test_projecting_out_a_planted_direction_removes_its_effect(run_dir):
    model = load_model(run_dir, 60)
    enc = _conflict_battery(run_dir)
    rng = np.random.default_rng(0)
    r = rng.normal(size=int(model.cfg.d_model))
    r /= np.linalg.norm(r)
    plant = [(depth_hook(1), lambda x, hook: x + 4.0 * torch.as_tensor(r, dtype=x.dtype))]
    project = project_out_hooks(r, 1)
    with scoped_hooks(model, []):
        base = patched_cm(model, model, enc, None)
    with scoped_hooks(model, plant):
        planted = patched_cm(model, model, enc, None)
    with scoped_hooks(model, project):
        projected = patched_cm(model, model, enc, None)
    with scoped_hooks(model, plant + project):  # same hook point: the projection runs after the plant
        both = patched_cm(model, model, enc, None)
    assert abs(planted - base) > 1e-2
    assert both == pytest.approx(projected, abs=1e-5)


def test_appendix_end_to_end_with_report_sections(run_dir, tmp_path):
    out = appendix_run(run_dir, family="pronoun_gender", out_dir=tmp_path, capture_missing=True)
    res = out["families"]["pronoun_gender"]
    assert res["source"] == "capture" and res["final"] == 60
    assert set(res["timing"]) >= {"read", "decompose", "decode", "carrier", "crosspatch", "direction", "bootstrap"}
    L = 2
    assert np.asarray(res["decode"]).shape == (4, L + 1)
    assert 0 < res["carrier"]["final"]["share"] <= 1 and res["carrier"]["final"]["top_head"].startswith("L")
    assert [r["depth"] for r in res["direction"]["final"]] == list(range(L + 1))
    assert "number_agreement" in res["direction"]["final"][0]["nontarget"]
    assert res["bootstrap"]["n_resamples"] == 1000
    assert json.loads(Path(out["json"]).read_text())["families"]["pronoun_gender"]["steps"] == [0, 20, 40, 60]
    assert Path(out["png"][0]).stat().st_size > 1000
    section = report_section(tmp_path)
    assert section and "top head, share at final" in section[0] and "data:image/png" in section[1]
    assert compare_section([run_dir]) == []  # no run with measures in its own folder: nothing side by side
    h = headline(res)
    assert h["max_error"] < 1e-3 and h["share_final"] == res["carrier"]["final"]["share"]
    both = compare_table([("surviving", h), ("displaced", h)])
    assert "<th>surviving</th><th>displaced</th>" in both and both.count("<tr>") == 1 + len(ROWS)


def test_decomposition_is_exact_on_the_paper_preset(tmp_path):
    """The nanochat decoder (weightless RMS norms, an embedding norm, rotary, no biases, value
    embeddings, logit soft-cap) on real text with the paper's battery: still exact at every
    checkpoint, for a single-token (she/he) and a multi-token (" an old book") family."""
    from runner.data.textcorpus import TextCorpusSpec, build_text_corpus
    from tests.helpers import REFERENCE_BATTERY
    from tests.integration.test_paper_preset_train import SAMPLE, tiny_paper

    torch.manual_seed(0)
    path = build_text_corpus(TextCorpusSpec(name="kjv", source=f"text:{SAMPLE}", tokenizer="bpe:1024"),
                             tmp_path / "corpora", workers=1)
    sha = json.loads((path / "manifest.json").read_text())["sha256"]
    run = train_run(tiny_paper(sha, str(Path(REFERENCE_BATTERY).resolve())), tmp_path / "runs", progress=False,
                    log=lambda *_: None, corpora_dir=tmp_path / "corpora")
    steps = checkpoint_steps(run)
    for family in ("pronoun_gender_ref", "a_an_adjective"):
        rows = family_rows(run, family, DECOMPOSE_KINDS, capture_missing=True)
        assert rows.source == "capture"
        mask = np.array([it.condition == "conflict" and it.split == "heldout" for it in rows.probes.items])
        dec = decompose_series(rows, readouts(run, steps), mask)
        assert max(dec["max_error"]) < 1e-3 and np.abs(np.array(dec["bias"])).max() == 0.0  # no biases
