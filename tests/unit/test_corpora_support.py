import numpy as np
import pytest

from runner.config import CorpusConfig
from runner.data.corpora import stream_sha256, synthetic_rows, world_tokenizer
from runner.data.support import (
    ClassIds,
    Counts,
    bigram_counts,
    contested_counts,
    count_support,
    windowed_counts,
)
from runner.world import vocab as V
from runner.world.presets import PRESETS
from runner.world.rules import RULES


def _ids(words):
    tok = world_tokenizer()
    return np.array([tok.token_to_id(w) for w in words], dtype=np.int32)


def test_corpus_is_deterministic_and_seed_sensitive():
    a = synthetic_rows(CorpusConfig(name="web", n_stories=300, seed=3))
    b = synthetic_rows(CorpusConfig(name="web", n_stories=300, seed=3))
    c = synthetic_rows(CorpusConfig(name="web", n_stories=300, seed=4))
    assert stream_sha256(a) == stream_sha256(b) != stream_sha256(c)


@pytest.mark.parametrize("preset", ["web", "stories"])
def test_corpus_is_stationary(preset):
    """Support measured on the first and the last tenth of the stream agree."""
    rows = synthetic_rows(CorpusConfig(name=preset, n_stories=20_000, seed=0))
    tok = world_tokenizer()
    n = len(rows) // 10
    first = count_support(rows[:n], tok, ["pronoun_gender"], pad_id=0)["pronoun_gender"]
    last = count_support(rows[-n:], tok, ["pronoun_gender"], pad_id=0)["pronoun_gender"]
    target = PRESETS.get(preset).support
    for cls in ("feminine", "masculine"):
        f, l_ = first[cls]["contested"], last[cls]["contested"]
        pf, pl = f["rule"] / f["cues"], l_["rule"] / l_["cues"]
        assert abs(pf - pl) < 0.04, (pf, pl)
        assert abs(pf - target) < 0.04
        wf, wl = first[cls]["windowed"], last[cls]["windowed"]
        # share of windowed events the rule wins; its s.e. is ~0.008 at this size
        assert abs(wf["rule"] / (wf["rule"] + wf["prior"]) - wl["rule"] / (wl["rule"] + wl["prior"])) < 0.03


def test_presets_differ_only_in_support():
    """Same vocabulary, sentence mix and story length; only the contested outcome differs."""
    web = synthetic_rows(CorpusConfig(name="web", n_stories=5000))
    sto = synthetic_rows(CorpusConfig(name="stories", n_stories=5000))
    assert PRESETS.get("web").p_family == PRESETS.get("stories").p_family
    assert abs((web != 0).sum(1).mean() - (sto != 0).sum(1).mean()) < 0.5
    tok = world_tokenizer()
    for fam in ("pronoun_gender", "number_agreement"):
        cw = count_support(web, tok, [fam], pad_id=0)[fam]
        cs = count_support(sto, tok, [fam], pad_id=0)[fam]
        for cls in cw:
            # contested events are equally frequent; who wins them is what differs
            assert abs(cw[cls]["contested"]["cues"] - cs[cls]["contested"]["cues"]) / cs[cls]["contested"]["cues"] < 0.1
            assert cs[cls]["contested"]["ratio"] > 3 > 0.2 > cw[cls]["contested"]["ratio"]
            assert cs[cls]["windowed"]["ratio"] > cw[cls]["windowed"]["ratio"]


def test_heldout_pairs_never_in_training_stream():
    rows = synthetic_rows(CorpusConfig(name="web", n_stories=3000))
    fam = RULES.get("pronoun_gender")
    words = V.all_words()
    for row in rows[:3000]:
        ws = [words[i] for i in row]
        for p, w in enumerate(ws):
            if w in fam.cue_classes["feminine"] + fam.cue_classes["masculine"] and p + 1 < len(ws):
                if ws[p + 1] in fam.keys:
                    assert not fam.is_heldout(w, ws[p + 1]), (w, ws[p + 1])


# ---- hand-made streams -------------------------------------------------------------------
def _cls(rule, prior, cues):
    tok = world_tokenizer()
    return ClassIds("c", np.array([tok.token_to_id(c) for c in cues]), np.array([tok.token_to_id(rule)]),
                    np.array([tok.token_to_id(prior)]))


def test_windowed_counts_known_stream():
    s = _ids("Sue cried because she was sad . Anna went to the park . Mary ran he . Lily sang".split()
             + ["."] * 20 + ["she"])
    c = windowed_counts(s, _cls("she", "he", ["Sue", "Anna", "Mary", "Lily"]), k=16)
    # Sue -> she (rule); Anna -> 'he' at distance 8 (prior); Mary -> he (prior); Lily: she is 22 away
    assert (c.rule, c.prior, c.cues) == (1, 2, 4)
    assert c.ratio == pytest.approx(2 / 3)


def test_bigram_counts_known_stream():
    s = _ids("Sue she Anna he Mary was Sue she".split())
    c = bigram_counts(s, _cls("she", "he", ["Sue", "Anna", "Mary"]))
    assert (c.rule, c.prior, c.cues) == (2, 1, 4)


def test_contested_counts_known_story():
    fam = RULES.get("pronoun_gender")
    story = ("<bos> Tom cried because he was sad . Sue cried because he was sad . "
             "Mary cried because she was sad . Anna ran because she was sad . Lily cried because she was sad .")
    rows = _ids(story.split())[None, :]
    got = contested_counts(rows, fam, world_tokenizer())
    # Sue after 'cried->he': contested, copy shown (prior). Mary: last 'cried' answer is he -> contested, rule.
    # Lily: last 'cried' answer is she -> not contested. Anna: 'ran' new -> not contested.
    assert (got["feminine"].rule, got["feminine"].prior, got["feminine"].cues) == (1, 1, 2)
    assert got["masculine"].cues == 0


def test_blocked_counting_equals_one_pass():
    rows = synthetic_rows(CorpusConfig(name="web", n_stories=400))
    tok = world_tokenizer()
    a = count_support(rows, tok, ["pronoun_gender"], pad_id=0, block=37)
    b = count_support(rows, tok, ["pronoun_gender"], pad_id=0, block=10_000)
    assert a == b
    assert set(a["pronoun_gender"]["feminine"]) == {"windowed", "contested"}
    assert Counts(3, 1).ratio == 2.0
