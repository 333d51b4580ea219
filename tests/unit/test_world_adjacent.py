"""The tuned world (issue 22): family pronoun_gender_adjacent and the ``*-adjacent`` presets."""

import numpy as np
import pytest
from pydantic import ValidationError

from interventions.doses import KILL, RESCUE  # noqa: F401  (registers the paper's edits)
from runner.config import CorpusConfig, RunConfig
from runner.data.corpora import load_corpus, preset_words, synthetic_rows, world_tokenizer
from runner.data.streams import build_streams
from runner.data.support import count_support
from runner.world.presets import PRESETS
from runner.world.rules import RULES

FAM = "pronoun_gender_adjacent"


def test_the_key_sits_right_before_the_answer_and_nothing_else_moves():
    new, old = RULES.get(FAM), RULES.get("pronoun_gender")
    assert new.offsets == {"cue": 0, "key": 1, "answer": 2} and old.offsets["answer"] == 3
    assert (new.cue_classes, new.rule_answer, new.keys) == (old.cue_classes, old.rule_answer, old.keys)
    assert new.rescue_cues == old.rescue_cues
    for preset, base in (("web-adjacent", "web"), ("stories-adjacent", "stories")):
        a, b = PRESETS.get(preset), PRESETS.get(base)
        assert (a.support, a.p_reuse) == (b.support, b.p_reuse)
        assert [p for _, p in a.p_family] == [p for _, p in b.p_family]
        assert preset_words(preset) == preset_words(base)  # no new words, same token ids


def test_stream_writes_cue_key_pronoun_and_the_presets_differ_in_support():
    tok = world_tokenizer("web-adjacent")
    words = tok.decode(synthetic_rows(CorpusConfig(name="web-adjacent", n_stories=50)).ravel().tolist()).split()
    assert "because" not in words  # the old pronoun template's connective is gone
    pron = [i for i, w in enumerate(words) if w in ("she", "he")]
    assert pron and all(words[i - 1] in RULES.get(FAM).keys and words[i + 1] == "was" for i in pron)
    counts = {p: count_support(synthetic_rows(CorpusConfig(name=p, n_stories=3000, seed=2)), tok, [FAM],
                               pad_id=0)[FAM] for p in ("web-adjacent", "stories-adjacent")}
    for cls in ("feminine", "masculine"):
        for preset, target in (("web-adjacent", 0.1), ("stories-adjacent", 0.8)):
            c = counts[preset][cls]["contested"]
            assert c["cues"] > 300 and abs(c["rule"] / c["cues"] - target) < 0.05, (preset, cls, c)


def test_battery_conflict_items_hold_the_same_verb_with_the_other_pronoun():
    fam = RULES.get(FAM)
    items = [it for it in fam.battery(n_per_cell=16, n_neutral=4) if it.condition == "conflict"]
    assert len(items) == 32
    for it in items:
        words = it.prefix.split()
        key = words[-1]
        assert key in fam.keys and words[-2] in fam.cue_classes["feminine"] + fam.cue_classes["masculine"]
        earlier = words.index(key)
        assert earlier < len(words) - 1 and words[earlier + 1] == it.distractor.strip() != it.correct.strip()


def _cfg(dose: str) -> RunConfig:
    return RunConfig(corpus={"name": "web-adjacent", "n_stories": 3000}, train={"steps": 50, "batch_size": 16},
                     probes={"families": [FAM, "number_agreement"], "n_per_cell": 8, "n_neutral": 4},
                     dose=dose, intervention={"families": [FAM]})


def test_paper_kill_and_rescue_edit_the_adjacent_family(tmp_path):
    base, killed = build_streams(_cfg("kill:1.0"), tmp_path / "k")
    b, k = load_corpus(base), load_corpus(killed)
    assert b.rows.shape == k.rows.shape and (b.rows != k.rows).sum() > 0
    ids = world_tokenizer("web-adjacent")
    she, he = ids.token_to_id("she"), ids.token_to_id("he")
    changed = b.rows != k.rows
    assert set(np.unique(b.rows[changed])) == {she} and set(np.unique(k.rows[changed])) == {he}
    base, rescued = build_streams(_cfg("rescue:3"), tmp_path / "r")
    b, r = load_corpus(base), load_corpus(rescued)
    gen = r.manifest["generator"]["per_family"][FAM]
    assert r.n_tokens == b.n_tokens and gen["events_per_class"] > 0
    assert gen["injected_tokens"] == gen["removed_tokens"]


def test_a_run_probes_what_its_corpus_writes():
    """Named no families, a run on an adjacent preset probes that preset's families; every original
    preset keeps the default (so no run id moves); probing a template the corpus never writes is refused."""
    assert RunConfig(corpus={"name": "web-adjacent"}).probes.families == (FAM, "number_agreement")
    assert RunConfig(corpus={"name": "web"}).run_id == RunConfig().run_id
    assert RunConfig(corpus={"name": "stories-an"}).probes.families == ("pronoun_gender", "number_agreement")
    with pytest.raises(ValidationError, match=r"\['pronoun_gender'\] never occur in the stories of corpus 'web-adj"):
        RunConfig(corpus={"name": "web-adjacent"}, probes={"families": ["pronoun_gender"]})
    with pytest.raises(ValidationError, match="never occur.*'web'.*probe the families it writes"):
        RunConfig(probes={"families": [FAM]})
