"""The appendix measures' pure parts: the decodability classifier, the cue direction, the paired
bootstrap, the carrier share, the exact decomposition's check, positions in any battery."""

from __future__ import annotations

import numpy as np
import pytest

from mech.decode import class_direction, cross_frame_accuracy, nearest_mean_accuracy, rms_normalise
from mech.decompose import DecompositionError, Readout, decompose_rows, head_share
from mech.positions import cue_class, decision_tokens, locate_all, template_slots
from mech.probes import encode_probes, locate_words
from mech.uncertainty import paired_bootstrap
from runner.world.batteries import ProbeItem, read_battery
from tests.helpers import REFERENCE_BATTERY

TOKENIZER = REFERENCE_BATTERY.replace("batteries/rvp4.jsonl", "tokenizers/tinystories-bpe8192.json")


def _frames(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    y = np.array(["a", "b"] * (n // 2))
    frame = np.where(np.arange(n) < n // 2, "train", "heldout")
    return y[rng.permutation(n)], frame


def test_decodability_is_chance_on_random_labels_and_one_on_a_planted_direction():
    rng = np.random.default_rng(0)
    n, d = 400, 32
    X = rng.normal(size=(n, d))
    accs = []
    for seed in range(20):
        y, frame = _frames(n, np.random.default_rng(seed))
        accs.append(cross_frame_accuracy(X, y, frame))
    assert abs(np.mean(accs) - 0.5) < 0.03 and max(abs(a - 0.5) for a in accs) < 0.12
    y, frame = _frames(n, rng)
    r = rng.normal(size=d)
    planted = X + np.where(y == "a", 1.0, -1.0)[:, None] * r[None] * 0.6
    assert cross_frame_accuracy(planted, y, frame) > 0.97
    # the fitted class direction recovers the planted one
    u = class_direction(planted, y, ["a", "b"])
    assert np.linalg.norm(u) == pytest.approx(1.0) and u @ (r / np.linalg.norm(r)) > 0.9


def test_classifier_edges_and_rms_normalisation():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.isnan(nearest_mean_accuracy(X, np.array(["a", "a"]), X, np.array(["a", "b"])))
    with pytest.raises(ValueError, match="two frames"):
        cross_frame_accuracy(X, np.array(["a", "b"]), np.array(["f", "f"]))
    z = rms_normalise(np.array([[3.0, 4.0]]))
    assert np.sqrt((z ** 2).mean()) == pytest.approx(1.0)
    # balanced: a classifier that always says "a" scores 0.5 however many "a" there are
    Xf, yf = np.array([[0.0], [10.0]]), np.array(["a", "b"])
    Xt, yt = np.array([[0.1]] * 9 + [[0.2]]), np.array(["a"] * 9 + ["b"])
    assert nearest_mean_accuracy(Xf, yf, Xt, yt) == pytest.approx(0.5)


def test_paired_bootstrap_uses_one_resample_for_both_checkpoints():
    rng = np.random.default_rng(1)
    m_peak = rng.normal(2.0, 1.5, 60)
    strata = np.repeat(["t0", "t1", "t2"], 20)
    # a constant drop: a paired resample sees exactly it every time; an unpaired one would not
    res = paired_bootstrap(m_peak, m_peak - 0.7, strata, n=1000, seed=0)
    assert res["drop"] == pytest.approx(0.7) and res["ci95"] == pytest.approx([0.7, 0.7])
    assert res["n_strata"] == 3 and res["n_resamples"] == 1000 and res["p_drop_le_0"] == 0.0
    m_final = m_peak - 0.7 + rng.normal(0, 1, 60)
    noisy = paired_bootstrap(m_peak, m_final, strata, seed=0)
    lo, hi = noisy["ci95"]
    assert lo < noisy["drop"] < hi and hi - lo > 0.1
    assert paired_bootstrap(m_peak, m_final, strata, seed=0) == noisy  # fixed seed: the same draws
    assert paired_bootstrap(m_peak, m_final, strata, seed=1)["ci95"] != noisy["ci95"]


def test_head_share_is_the_top_heads_fraction_of_total_absolute_attribution():
    heads = np.array([[0.1, -0.6], [0.2, 0.1]])
    (layer, h), share = head_share(heads)
    assert (layer, h) == (0, 1) and share == pytest.approx(0.6 / 1.0)


def _consistent_rows(rng, n=5, L=2, H=3, D=8, V=11):
    r = Readout(w=rng.normal(1, 0.1, D), b=rng.normal(0, 0.1, D), rms=False, W_U=rng.normal(size=(D, V)),
                b_U=rng.normal(size=V), b_O=rng.normal(size=(L, D)))
    rows = {"resid_pre": rng.normal(size=(n, L, D)), "result": rng.normal(size=(n, L, H, D)),
            "mlp_out": rng.normal(size=(n, L, D))}
    x = rows["resid_pre"][:, 0] + rows["result"].sum((1, 2)) + r.b_O.sum(0) + rows["mlp_out"].sum(1)
    scale = np.sqrt(x.var(-1) + 1e-5)
    logits = ((x - x.mean(-1, keepdims=True)) / scale[:, None] * r.w + r.b) @ r.W_U + r.b_U
    c, d = rng.integers(0, V, n), rng.integers(0, V, n)
    rows["ln_final_scale"] = scale
    rows["unembed"] = np.stack([logits[np.arange(n), c], logits[np.arange(n), d]], 1)
    return rows, r, c, d


def test_decomposition_terms_sum_to_the_gap_and_a_missing_writer_is_caught():
    rows, r, c, d = _consistent_rows(np.random.default_rng(2))
    t = decompose_rows(rows, r, c, d)
    np.testing.assert_allclose(t["direct"] + t["contextual"] + t["bias"], t["total"], atol=1e-9)
    np.testing.assert_allclose(t["heads"].sum(-1) + t["b_O"], t["attn"], atol=1e-12)
    bad = dict(rows, mlp_out=rows["mlp_out"] * 0.5)
    with pytest.raises(DecompositionError, match="miss the measured gap"):
        decompose_rows(bad, r, c, d)


@pytest.fixture(scope="module")
def battery():
    return read_battery(REFERENCE_BATTERY)


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(TOKENIZER)


def test_rule_vs_prior_positions_classes_and_decision_site(battery, bpe):
    ref = [it for it in battery if it.family == "pronoun_gender_ref"]
    p = encode_probes(ref, bpe, None, 64)
    for i, it in enumerate(p.items):
        toks = [bpe.id_to_token(int(t)) for t in p.tokens[i]]
        assert toks[int(p.cue_pos[i])].lstrip("Ġ") == it.prefix.split()[0]  # the name
        assert int(p.evidence_pos[i]) == int(p.pred_pos[i])  # the frame word before the answer
        assert cue_class(it) == ("feminine" if it.correct.strip() == "she" else "masculine")
    an = encode_probes([it for it in battery if it.family == "det_an_choice"][:8], bpe, None, 64)
    assert (an.cue_pos == -1).all()  # the cue (egg) comes after the answer
    assert {bpe.id_to_token(int(t)) for t in an.correct_id} <= {"Ġan", "Ġa"}
    past = [it for it in battery if it.family == "irregular_past"]
    assert cue_class(past[0]) == past[0].condition  # no registered classes: the condition
    slots = template_slots(past)  # the one word a template varies: here the subject's name
    assert len(slots) > len(past) // 2
    names = {it.prefix.split()[slots[it.item_id]] for it in past if it.item_id in slots}
    assert names and all(w[0].isupper() and w.isalpha() for w in names) and not names & {"Last", "Yesterday"}
    assert locate_all(past[:3], locate_words)[0][1] == len(past[0].prefix.split()) - 1


def test_multi_token_answers_are_decided_where_they_first_differ(bpe):
    ids = lambda s: bpe.encode(s, add_special_tokens=False).ids  # noqa: E731
    shared, c, d = decision_tokens(ids(" more big"), ids(" more bigger"))
    assert [bpe.id_to_token(t) for t in shared] == ["Ġmore"] and c != d
    assert decision_tokens(ids(" she"), ids(" she"))[1:] == (ids(" she")[0],) * 2  # tied: a zero gap
    it = ProbeItem(family="x", condition="conflict", probe="x.conflict", split="heldout", template_id="t",
                   prefix="It got even", correct=" more big", distractor=" more bigger", item_id="x/0")
    p = encode_probes([it], bpe, None, 64)
    assert p.n_shared is not None and int(p.n_shared[0]) == 1
    assert bpe.id_to_token(int(p.tokens[0, p.pred_pos[0]])) == "Ġmore"
