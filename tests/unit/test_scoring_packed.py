"""Checkpoint scoring (runner.scoring.continuation_logprobs) against a plain reference, and the
one-round-trip store append (runner.store_write) against what a reader sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runner.config import ModelConfig
from runner.data.corpora import world_tokenizer
from runner.model import build_model
from runner.scoring import _has_hooks, _packed, aggregate, continuation_logprobs, encode_battery
from runner.world import vocab as V
from runner.world.batteries import ProbeItem
from runner.world.rules import RULES


@pytest.fixture(scope="module")
def setup():
    tok = world_tokenizer()
    model = build_model(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=64), tok.get_vocab_size(), 3)
    items = RULES.get("pronoun_gender").battery(n_per_cell=4, n_neutral=2)
    items += [ProbeItem(family="f", condition="conflict", probe="f.conflict", split="heldout", template_id="t",
                        prefix="Sue cried", correct=" because she", distractor=" because he", item_id="multi")]
    enc = encode_battery(items, tok, tok.token_to_id(V.BOS), n_ctx=64)
    return model, enc


@torch.no_grad()
def _reference(model, enc) -> np.ndarray:
    """One sequence at a time, full-vocabulary log-softmax at every position, masked sum."""
    model.eval()
    out = []
    for i in range(enc.tokens.shape[0]):
        toks = enc.tokens[i: i + 1]
        lp = torch.log_softmax(model(toks).float(), dim=-1)[0, :-1]
        tgt = lp.gather(-1, toks[0, 1:, None])[:, 0]
        out.append(float((tgt.double() * enc.cont_mask[i, :-1].double()).sum()))
    return np.array(out)


def test_packed_scoring_equals_full_log_softmax_reference(setup):
    model, enc = setup
    model(enc.tokens[:2])  # the bridge wires pre-hooks of its own on a first forward: not hook points
    assert not _has_hooks(model)  # so the packed plan runs
    ref = _reference(model, enc)
    for bs in (3, 256):
        lpc, lpd = continuation_logprobs(model, enc, batch_size=bs)
        np.testing.assert_allclose(np.concatenate([lpc, lpd]), ref, rtol=0, atol=1e-6)
    plan = _packed(enc, 256, 64)
    n_rows = sum(b.shape[0] for b in plan.batches)
    assert n_rows < enc.tokens.shape[0]  # one-token answers share their prefix row
    assert sum(b.numel() for b in plan.batches) < enc.tokens.numel()
    multi = [it.item_id for it in enc.items].index("multi")
    assert int(enc.cont_mask[multi].sum()) == 2  # the two-token continuation is summed, not truncated


def test_an_items_figures_do_not_depend_on_the_rest_of_its_battery(setup):
    """What makes a rescore of a few families equal training's scores of the whole battery."""
    model, enc = setup
    tok = world_tokenizer()
    sub_items = [it for it in enc.items if it.family == "f" or it.condition == "conflict"]
    sub = encode_battery(sub_items, tok, tok.token_to_id(V.BOS), n_ctx=64)
    full_c, full_d = continuation_logprobs(model, enc)
    sub_c, sub_d = continuation_logprobs(model, sub)
    keep = [i for i, it in enumerate(enc.items) if it in sub_items]
    np.testing.assert_array_equal(sub_c, full_c[keep])
    np.testing.assert_array_equal(sub_d, full_d[keep])


def test_hooked_model_runs_as_laid_out_and_agrees(setup):
    model, enc = setup
    plain = np.concatenate(continuation_logprobs(model, enc))
    seen = []

    def spy(act, hook):
        seen.append(tuple(act.shape))
        return act

    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", spy)], reset_hooks_end=True):
        assert _has_hooks(model)
        hooked = np.concatenate(continuation_logprobs(model, enc, batch_size=4))
    assert seen[0][:2] == (4, enc.tokens.shape[1])  # the rows and positions of enc.tokens
    np.testing.assert_allclose(hooked, plain, rtol=0, atol=1e-6)
    assert not _has_hooks(model)


def test_training_mode_restored_and_rows_feed_aggregate(setup):
    model, enc = setup
    model.train()
    lpc, lpd = continuation_logprobs(model, enc)
    assert model.training
    m = aggregate(enc.items, lpc, lpd, enc.n_correct, enc.n_distractor)
    assert 0.0 <= m["pronoun_gender/acc_conflict_heldout"] <= 1.0 and np.isfinite(m["f/cm"])


def test_one_round_trip_append_reads_back_every_row(tmp_path, setup):
    from runner.scoring import battery_info, init_scores, score_attrs
    from runner.store import RunStore

    _, enc = setup
    st = RunStore(tmp_path / "s.zarr")
    init_scores(st, enc, score_attrs(enc, battery_info(None)))
    rng = np.random.default_rng(0)
    rows = []
    for step in (0, 10, 20):
        a, b = rng.standard_normal(enc.n), rng.standard_normal(enc.n)
        m = aggregate(enc.items, a, b, enc.n_correct, enc.n_distractor)
        st.append(step, 1.5, 0.01, enc.items, a, b, m)
        rows.append((a, b, m))
    with pytest.raises(ValueError, match="not after the last stored step 20"):
        st.append(20, 1.0, 0.0, enc.items, a, b, m)
    again = RunStore(tmp_path / "s.zarr")  # a fresh reader
    assert again.n_complete == 3 and again.steps().tolist() == [0, 10, 20]
    fam = np.array([it.family for it in enc.items]) == "pronoun_gender"
    np.testing.assert_array_equal(again.series("pronoun_gender/logp_correct"),
                                  np.stack([r[0][fam] for r in rows]).astype(np.float32))
    np.testing.assert_array_equal(again.series("pronoun_gender/cm"),
                                  np.array([r[2]["pronoun_gender/cm"] for r in rows], np.float32))
    st.truncate(10)
    st.append(30, 1.0, 0.0, enc.items, a, b, m)  # appends after a truncate land at the right row
    assert RunStore(tmp_path / "s.zarr").steps().tolist() == [0, 10, 30]
    assert RunStore(tmp_path / "s.zarr").array("train/step").shape == (3,)
