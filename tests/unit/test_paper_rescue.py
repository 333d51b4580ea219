"""The paper's rescue (interventions.rescue, interventions.doses.Rescue): injected events equal the
target after tokenization, the token count is unchanged when matched, documents fill exactly,
the whole-dose window concentrates the same total, and the paper's kill builds through the
dose registry with the recount in its manifest."""

import json
import random

import numpy as np
import pytest

from interventions.doses import KILL, RESCUE
from interventions.rescue import PAPER_DELTA, capacity, document, fillable, filler_lengths
from runner.config import RunConfig
from runner.data.corpora import load_corpus
from runner.data.streams import build_streams
from runner.world.rules import RULES


def _cfg(dose, corpus="web", **iv):
    return RunConfig(corpus={"name": corpus, "n_stories": 3000, "seed": 0}, dose=dose, intervention=iv,
                     train={"steps": 80, "seed": 1})


@pytest.mark.parametrize("n", range(0, 40))
def test_fillers_fill_every_fillable_length_exactly(n):
    if fillable(n):
        assert sum(filler_lengths(n)) == n
    assert fillable(n) == (n == 0 or n in (5, 6, 7) or n >= 10)


def test_document_has_exactly_its_length_and_one_rule_event_per_sentence():
    fam = RULES.get("pronoun_gender")
    rng = random.Random(0)
    for length in (30, 47, 64):
        cap = capacity(length, len(fam.rescue_template))
        doc = document(fam, rng, length, ["feminine", "masculine"] * (cap // 2))
        assert len(doc) == length and doc[0] == "<bos>"
        assert doc.count("she") == doc.count("he") == cap // 2


def test_rescue_matched_injects_the_target_and_keeps_the_token_count(tmp_path):
    cfg = _cfg("rescue:3", families=["pronoun_gender"])
    base, dosed = build_streams(cfg, tmp_path)
    b, d = load_corpus(base), load_corpus(dosed)
    gen = d.manifest["generator"]["per_family"]["pronoun_gender"]
    target = int(round(3 * PAPER_DELTA * b.n_tokens))
    assert gen["events_per_class"] == target and gen["target_class"] == "feminine"
    assert d.n_tokens == b.n_tokens and d.rows.shape == b.rows.shape
    assert gen["injected_tokens"] == gen["removed_tokens"]
    # the injected rows hold exactly `target` feminine and masculine rule events (counted after tokenization)
    changed = np.flatnonzero((d.rows != b.rows).any(1))
    assert len(changed) == gen["removed_rows"] == gen["documents"]
    tok = d.tokenizer
    text = " ".join(tok.decode(r.tolist()) for r in d.rows[changed])
    assert text.split().count("she") == target == text.split().count("he")
    assert gen["windowed_after"]["rule"] - gen["windowed_before"]["rule"] != 0


def test_rescue_appended_grows_and_whole_dose_concentrates(tmp_path):
    _, dosed = build_streams(_cfg("rescue:1", families=["pronoun_gender"], matched=False), tmp_path)
    d = load_corpus(dosed)
    gen = d.manifest["generator"]
    assert gen["tokens"] > gen["base_tokens"] and not gen["matched"]
    cfg = _cfg("rescue:1", families=["pronoun_gender"], start_step=0, end_step=20, whole_dose=True)
    _, dosed = build_streams(cfg, tmp_path)
    w = load_corpus(dosed).manifest["generator"]["per_family"]["pronoun_gender"]
    assert w["whole_dose_factor"] == 4.0
    assert w["events_per_class"] == int(round(4 * PAPER_DELTA * gen["base_tokens"]))
    with pytest.raises(ValueError, match="needs dose rescue:<d> and a window"):
        build_streams(_cfg("rescue:1", whole_dose=True), tmp_path)


def test_kill_builds_through_the_registry_with_its_recount(tmp_path):
    _, dosed = build_streams(_cfg("kill:ratio=0.46", corpus="stories"), tmp_path)
    d = load_corpus(dosed)
    rep = d.manifest["generator"]["per_family"]
    for fam, cls in (("pronoun_gender", "feminine"), ("number_agreement", "plural")):
        c = rep[fam]["classes"][cls]
        assert c["closed_form_ratio"] == pytest.approx(0.46)
        assert c["recount"]["ratio"] == pytest.approx(c["realised_ratio"])
        assert abs(c["realised_ratio"] - 0.46) < 0.1
    b = load_corpus(d.manifest["generator"]["base_corpus"])
    assert d.rows.shape == b.rows.shape and d.n_tokens == b.n_tokens
    assert int((d.rows != b.rows).sum()) == d.manifest["generator"]["tokens_changed"]
    assert json.loads((dosed / "manifest.json").read_text())["config"]["edit"] == "kill/paper-1"
    assert KILL.name == "kill" and RESCUE.name == "rescue"
