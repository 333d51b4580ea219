"""mech.names (the hook-name helper) and mech.probes (positions, matched twins): pure."""

from __future__ import annotations

import pytest

from mech import names as N
from mech.probes import encode_probes, locate_words, matched_pairs, switch_evidence
from runner.data.corpora import world_tokenizer
from runner.world import vocab as V
from runner.world.rules import RULES


def test_hook_name_layers_and_stacked_paths():
    assert N.hook_name("resid_pre", 3) == "blocks.3.hook_resid_pre"
    assert N.hook_name("resid_pre") == "blocks.L.hook_resid_pre"
    assert N.hook_name("result", 1) == "blocks.1.attn.hook_result"
    assert N.source_hook("result", 1) == "blocks.1.attn.hook_z"
    assert N.hook_name("embed", 5) == "hook_embed"
    for k in N.kinds():
        assert N.kind_of(N.hook_name(k)) == k
        assert N.kind_of(N.hook_name(k, 7)) == k
        assert N.dims(k)[:2] == ("step", "item")
    with pytest.raises(KeyError):
        N.hook_name("nope")
    with pytest.raises(KeyError):
        N.kind_of("blocks.x.hook_resid_pre")


def test_resolve_filter_forms():
    assert N.resolve_filter(None) == N.DEFAULT_KINDS
    assert N.resolve_filter(["pattern", "blocks.0.hook_resid_post"]) == ("pattern", "resid_post")
    assert N.resolve_filter(lambda n: "attn" in n) == ("result", "pattern")
    with pytest.raises(ValueError):
        N.resolve_filter(lambda n: False)


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


@pytest.mark.parametrize("family", ["pronoun_gender", "number_agreement"])
def test_positions_point_at_cue_and_evidence(tok, family):
    items = RULES.get(family).battery(n_per_cell=6, n_neutral=3, seed=1)
    p = encode_probes(items, tok, tok.token_to_id(V.BOS), 64)
    fam = RULES.get(family)
    answers = set(fam.answers)
    for i, it in enumerate(p.items):
        toks = [tok.id_to_token(int(t)) for t in p.tokens[i]]
        assert toks[0] == V.BOS
        assert toks[int(p.pred_pos[i])] == it.prefix.split()[-1]
        assert toks[int(p.evidence_pos[i])] in answers
        if it.condition != "neutral":
            assert fam.class_of(toks[int(p.cue_pos[i])]) in fam.cue_classes
            # on conflict items the earlier answer is the competitor's (= the distractor)
            expect = it.distractor.strip() if it.condition == "conflict" else it.correct.strip()
            assert toks[int(p.evidence_pos[i])] == expect
        assert tok.id_to_token(int(p.correct_id[i])) == it.correct.strip()


def test_switched_twin_differs_only_in_the_evidence(tok):
    items = RULES.get("pronoun_gender").battery(n_per_cell=8, n_neutral=2, seed=2)
    conflict = [it for it in items if it.condition == "conflict"]
    tw = switch_evidence(conflict[0])
    a, b = conflict[0].prefix.split(), tw.prefix.split()
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    assert len(a) == len(b) and len(diff) == 1
    assert b[diff[0]] == conflict[0].correct.strip() and locate_words(conflict[0])[1] == diff[0]
    pa, pb = matched_pairs(items, tok, tok.token_to_id(V.BOS), 64, split=None)
    assert pa.n == pb.n == len(conflict)
    assert pa.tokens.shape == pb.tokens.shape
    assert ((pa.tokens != pb.tokens).sum(1) == 1).all()
    assert (pa.evidence_pos == pb.evidence_pos).all()
    # the twin's evidence agrees with the rule
    for i in range(pb.n):
        assert int(pb.tokens[i, pb.evidence_pos[i]]) == int(pb.correct_id[i])
