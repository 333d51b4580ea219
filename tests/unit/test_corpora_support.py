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


def test_reuse_sets_the_rate_of_contests_and_only_it():
    """corpus.reuse overrides the preset's p_reuse: contests per story scale with it, who wins them
    (support) does not move, and the default writes the same stream and corpus folder as before."""
    tok = world_tokenizer()
    base = CorpusConfig(name="web", n_stories=4000, seed=1)
    assert stream_sha256(synthetic_rows(base)) == stream_sha256(
        synthetic_rows(CorpusConfig(name="web", n_stories=4000, seed=1, reuse=PRESETS.get("web").p_reuse)))
    assert CorpusConfig(name="web").dirname == "web-s0" != CorpusConfig(name="web", reuse=0.8).dirname
    lo = count_support(synthetic_rows(base), tok, ["pronoun_gender"], pad_id=0)["pronoun_gender"]
    hi = count_support(synthetic_rows(CorpusConfig(name="web", n_stories=4000, seed=1, reuse=0.8)), tok,
                       ["pronoun_gender"], pad_id=0)["pronoun_gender"]
    for cls in ("feminine", "masculine"):
        n_lo, n_hi = lo[cls]["contested"]["cues"], hi[cls]["contested"]["cues"]
        assert 1.5 < n_hi / n_lo < 2.5, (n_lo, n_hi)
        assert abs(hi[cls]["contested"]["rule"] / n_hi - 0.1) < 0.03
    # reuse 0 still repeats a key by chance (keys are drawn with replacement), less often
    none = count_support(synthetic_rows(CorpusConfig(name="web", n_stories=4000, seed=1, reuse=0.0)), tok,
                         ["pronoun_gender"], pad_id=0)["pronoun_gender"]
    assert all(none[c]["contested"]["cues"] < 0.5 * lo[c]["contested"]["cues"] for c in none)


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


# ---- traps: the cache key and the window definition ------------------------------------------
def test_support_cli_with_another_k_never_feeds_the_k16_cache(tmp_path):
    """``ungrok support --k 8`` once wrote ``<corpus>/support.json``, which ``corpus_support``
    then served as its k=16 cache: every later windowed ratio silently used k=8."""
    from cluster.cli import main as cli_main
    from runner.data.corpora import build_corpus, load_corpus
    from runner.data.support import corpus_support

    path = build_corpus(CorpusConfig(name="web", n_stories=300, seed=1), tmp_path)
    c = load_corpus(path)
    fams = ["pronoun_gender"]
    want16 = count_support(c.rows, c.tokenizer, fams, pad_id=c.pad_id, k=16)
    want8 = count_support(c.rows, c.tokenizer, fams, pad_id=c.pad_id, k=8)
    assert want8 != want16
    assert cli_main(["support", str(path), "--families", "pronoun_gender", "--k", "8"]) == 0
    assert corpus_support(path, fams) == want16
    assert corpus_support(path, fams, k=8) == want8
    assert corpus_support(path, fams) == want16  # both keys cached side by side


def _docs_rows(docs: list[str], width: int | None = None) -> np.ndarray:
    ids = [_ids(d.split()) for d in docs]
    w = width or max(map(len, ids))
    rows = np.full((len(ids), w), world_tokenizer().token_to_id(V.PAD), dtype=np.int32)
    for i, r in enumerate(ids):
        rows[i, : len(r)] = r
    return rows


@pytest.mark.parametrize("padded", [True, False])
def test_a_window_never_crosses_a_document_in_support_or_audit(padded):
    """A cue at the end of document 1 and an answer at the start of document 2 is no event for
    ``ungrok support`` (count_support) nor for ``ungrok audit`` (doc_counts)."""
    from runner.analysis.audit import doc_counts

    tok = world_tokenizer()
    pad = tok.token_to_id(V.PAD)
    doc1, doc2 = "<bos> Tom went to the park . Sue", "she was sad ."
    rows = _docs_rows([doc1, doc2], width=None if not padded else 12)
    if not padded:  # document 1 fills its row: no pad between the documents
        rows = _docs_rows([doc1, doc2], width=len(doc1.split()))
    sup = count_support(rows, tok, ["pronoun_gender"], pad_id=pad)["pronoun_gender"]["feminine"]["windowed"]
    assert (sup["rule"], sup["prior"]) == (0, 0)
    aud = doc_counts([r[r != pad] for r in rows], tok, ["pronoun_gender"], pad=pad)["pronoun_gender"]["windowed"]
    assert (int(aud[0].sum()), int(aud[1].sum())) == (0, 0)
    # the same cue and answer inside one document is an event for both
    one = _docs_rows([doc1 + " " + doc2])
    both = count_support(one, tok, ["pronoun_gender"], pad_id=pad)["pronoun_gender"]["feminine"]["windowed"]
    assert both["rule"] == 1
    assert int(doc_counts([one[0]], tok, ["pronoun_gender"], pad=pad)["pronoun_gender"]["windowed"][0].sum()) == 1


def test_support_and_audit_windowed_counts_agree_on_a_built_corpus(tmp_path):
    from runner.analysis.audit import audit_corpus
    from runner.data.corpora import build_corpus, load_corpus
    from runner.data.support import pooled

    path = build_corpus(CorpusConfig(name="stories", n_stories=400, seed=3), tmp_path)
    c = load_corpus(path)
    ref = count_support(c.rows, c.tokenizer, ["pronoun_gender", "number_agreement"], pad_id=c.pad_id)
    res = audit_corpus(path, ["pronoun_gender", "number_agreement"], block=64, n_boot=50)
    for fam in ("pronoun_gender", "number_agreement"):
        p = pooled(ref[fam], "windowed")
        w = res.families[fam]["windowed"]
        assert (w["rule"], w["prior"]) == (p["rule"], p["prior"])


def test_a_cache_whose_key_differs_is_never_served(tmp_path):
    import json

    from runner.data.corpora import build_corpus, load_corpus
    from runner.data.support import SUPPORT_VERSION, cache_path, corpus_support, support_key

    path = build_corpus(CorpusConfig(name="stories", n_stories=200, seed=1), tmp_path)
    c = load_corpus(path)
    want = count_support(c.rows, c.tokenizer, ["number_agreement"], pad_id=c.pad_id)
    bogus = {"singular": {"windowed": {"rule": 1, "prior": 1, "cues": 1, "ratio": 1.0}}}
    # a legacy <corpus>/support.json (no key) is not a cache
    (path / "support.json").write_text(json.dumps({"k": 16, "families": {"number_agreement": bogus}}))
    assert corpus_support(path, ["number_agreement"]) == want
    key = support_key(path, "number_agreement")
    assert key["version"] == SUPPORT_VERSION and key["k"] == 16 and key["corpus_sha256"] == c.manifest["sha256"]
    f = cache_path(path, key)
    assert json.loads(f.read_text())["key"] == key
    # a file at the right place whose stored key differs (older definition, other family definition)
    for stale in ({**key, "version": SUPPORT_VERSION - 1}, {**key, "family_sha256": "0" * 64}):
        f.write_text(json.dumps({"key": stale, "counts": bogus}))
        assert corpus_support(path, ["number_agreement"]) == want
    assert corpus_support(path, ["number_agreement", "pronoun_gender"])["number_agreement"] == want["number_agreement"]
