"""mech.localize ranking on synthetic series, and mech.attribution on a small untrained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mech.attribution import (
    ablation_hooks,
    attention_to_cue_and_evidence,
    direct_logit_attribution,
    patch_evidence,
)
from mech.capture import capture_probes, hook_count, scoped_hooks
from mech.localize import choose_split, rank_components
from mech.names import hook_name
from mech.probes import encode_probes, matched_pairs
from runner.config import ModelConfig
from runner.data.corpora import world_tokenizer
from runner.model import build_model
from runner.world import vocab as V
from runner.world.rules import RULES


def test_split_and_ranking_find_the_component_that_grows():
    steps = list(range(0, 1000, 50))
    s = np.array(steps)
    cm = np.where(s < 600, 0.8, -0.5)
    # the paper's cm_cross: the last step with smoothed CM >= 0 (550: mean(.8, .8, -.5) > 0)
    sp = choose_split(steps, cm, {"peak_step": 200, "cm_cross": 550})
    assert sp["step"] == 600 and sp["reason"] == "cm_cross"
    assert min(sp["post"]) == 600 and max(sp["pre"]) == 550 and min(sp["pre"]) == 200
    rng = np.random.default_rng(0)
    grows = np.where(s < 500, -0.2, 0.6) + rng.normal(0, 0.01, len(s))   # rises at 500
    flat = 0.3 + rng.normal(0, 0.01, len(s))
    falls = np.where(s < 600, 0.4, 0.0)
    table = rank_components(steps, ["A", "B", "C"], np.stack([flat, grows, falls]), sp)
    assert [r["component"] for r in table] == ["B", "A", "C"]
    top = table[0]
    assert top["growth"] == pytest.approx(0.6, abs=0.05)  # pre window 200..550 holds 6 x -0.2 and 2 x 0.6
    assert 500 <= top["cross_step"] <= 600 and 500 <= top["sign_step"] <= 600
    assert table[-1]["growth"] < 0 and table[-1]["cross_step"] is None


def test_split_without_crossing_uses_peak():
    steps = list(range(0, 500, 50))
    sp = choose_split(steps, np.linspace(0, 1, 10), {"peak_step": 300, "cm_cross": None})
    assert sp["reason"].startswith("cm_peak") and sp["step"] == 350


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tok = world_tokenizer()
    model = build_model(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=64), tok.get_vocab_size(), 3)
    model.eval()
    items = RULES.get("pronoun_gender").battery(n_per_cell=6, n_neutral=2, seed=0)
    probes = encode_probes(items, tok, tok.token_to_id(V.BOS), 64)
    return tok, model, items, probes


def test_dla_terms_sum_to_logit_difference(setup):
    tok, model, items, probes = setup
    labels, contrib, ld = direct_logit_attribution(model, probes, batch_size=7)
    assert contrib.shape == (probes.n, len(labels)) and "L1H1" in labels and "MLP0" in labels
    # an independent LD from a plain forward
    logits = model(probes.tokens)
    b = torch.arange(probes.n)
    last = logits[b, probes.pred_pos]
    ref = (last[b, probes.correct_id] - last[b, probes.distractor_id]).detach().numpy()
    np.testing.assert_allclose(ld, ref, atol=1e-4)
    np.testing.assert_allclose(contrib.sum(-1), ref, atol=1e-4)
    assert np.abs(contrib).max() > 1e-3  # not trivially zero


def test_capture_rows_match_run_with_cache_and_hooks_are_removed(setup):
    tok, model, items, probes = setup
    assert hook_count(model) == 0
    rows = capture_probes(model, probes, ("resid_post", "pattern", "result"), batch_size=5)
    assert hook_count(model) == 0
    _, cache = model.run_with_cache(probes.tokens)
    b = torch.arange(probes.n)
    np.testing.assert_allclose(rows["resid_post"][:, 1], cache[hook_name("resid_post", 1)][b, probes.pred_pos],
                               atol=1e-5)
    np.testing.assert_allclose(rows["pattern"][:, 0], cache[hook_name("pattern", 0)][b, :, probes.pred_pos], atol=1e-6)
    z = cache[hook_name("z", 1)][b, probes.pred_pos]
    res = torch.einsum("bhd,hdm->bhm", z, model.W_O[1])
    np.testing.assert_allclose(rows["result"][:, 1], res.detach(), atol=1e-5)


def test_scoped_hooks_remove_on_error_and_ablation_changes_output(setup):
    tok, model, items, probes = setup
    with pytest.raises(ZeroDivisionError):
        with scoped_hooks(model, ablation_hooks([(0, 1)], "zero")):
            assert hook_count(model) == 1
            _ = 1 / 0
    assert hook_count(model) == 0
    base = model(probes.tokens)
    with scoped_hooks(model, ablation_hooks([(0, 1), (1, 0)], "zero")):
        ablated = model(probes.tokens)
    assert not torch.allclose(base, ablated)
    assert torch.allclose(model(probes.tokens), base)


def test_patching_and_attention_shapes(setup):
    tok, model, items, probes = setup
    a, b = matched_pairs(items, tok, tok.token_to_id(V.BOS), 64, split=None)
    r = patch_evidence(model, a, b)
    assert r["heads"].shape == (2, 2) and r["attn_out"].shape == (2,) and r["mlp_out"].shape == (2,)
    assert hook_count(model) == 0
    # patching every layer's attention and MLP output reproduces the clean (conflict) run exactly only
    # if all paths are covered; here check the baselines are what a plain forward gives
    assert r["ld_conflict"] != r["ld_switched"]
    cue, ev = attention_to_cue_and_evidence(model, probes.where("conflict"))
    assert cue.shape == ev.shape == (2, 2)
    assert ((cue >= 0) & (cue <= 1)).all() and ((ev >= 0) & (ev <= 1)).all()
