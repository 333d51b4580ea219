"""The paper's rescue on real-text (``built:``) corpora: on a hand-made flat stream the injected
events counted after tokenization equal the target, the token count is unchanged when matched (whole
neutral documents removed, the last one cut), every kept document survives in order, appending
grows the stream by the injected tokens, a rerun reuses the stream, a tokenizer that cannot
spell the rescue cues and a lexicon that overlaps a probe are refused. Offline: the documents are
written here; the BPE case reads the paper's web tokenizer from shared/ (skipped without it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from interventions.gate import GateError, check_lexicon
from interventions.registry import InterventionError
from interventions.textrescue import counting_family, lexicon_for
from runner.config import RunConfig
from runner.data.corpora import load_corpus, world_tokenizer
from runner.data.matching import TokenStream
from runner.data.rvp_support import count_rvp
from runner.data.streams import build_streams
from runner.data.textcorpus import TextCorpusSpec, build_text_corpus
from runner.scoring import read_battery
from runner.world.rules import RULES
from runner.world.rvp import RescueLexicon, rescue_lexicon
from tests.helpers import REFERENCE_BATTERY, world_text_corpus

NEUTRAL = ["the dog saw the cat .", "the teacher went to the park .", "the child saw the fish at the lake .",
           "the baker went to the shop . the cow saw the sheep ."]
CUED = ["Mary cried because she was sad .", "Tom laughed because he was happy .", "Lucy saw the cat . she was calm ."]
DOCS = [(NEUTRAL + CUED)[i % 7] for i in range(40)]


@pytest.fixture
def hand(tmp_path) -> Path:
    return world_text_corpus(DOCS, tmp_path / "corpora", row_tokens=16)


def _cfg(dose: str = "rescue:1", fams=("pronoun_gender",), name: str = "built:hand", **iv) -> RunConfig:
    """A dosed config; a rule-versus-prior family's probes are the reference battery's (skipped without it)."""
    iv = {"families": fams, "reference": "0.02", **iv}
    probes: dict = {"families": fams}
    if not set(fams) <= {"pronoun_gender", "number_agreement"}:
        if not os.path.exists(REFERENCE_BATTERY):
            pytest.skip(f"the reference battery is not at {REFERENCE_BATTERY} (shared/ beside the repo)")
        probes["battery"] = REFERENCE_BATTERY
    return RunConfig.model_validate({"corpus": {"name": name, "story_tokens": 16}, "probes": probes,
                                     "dose": dose, "intervention": iv})


def _docs(ids: np.ndarray, eot: int) -> list[tuple[int, ...]]:
    cuts = np.append(np.flatnonzero(ids == eot), len(ids))
    return [tuple(ids[a:b].tolist()) for a, b in zip(cuts[:-1], cuts[1:])]


def _recount(ids: np.ndarray, eot: int, fam: str = "pronoun_gender") -> dict:
    """The feminine/masculine windowed counts, rescue cues matched as token sequences."""
    f = RULES.get(fam)
    cuts = np.flatnonzero(ids == eot)
    stream = TokenStream(ids, cuts if cuts[0] == 0 else np.append(0, cuts))
    got = count_rvp(stream, world_tokenizer(), [counting_family(f, lexicon_for(f, "t"))], multi_token_cues=True)
    return {c: (v["windowed"]["rule"], v["windowed"]["prior"]) for c, v in got[fam].items()}


def test_matched_rescue_injects_the_target_and_keeps_the_token_count(hand):
    base = load_corpus(hand)
    before = np.array(base.stream)
    eot = int(base.manifest["eot_id"])
    _, dest = build_streams(_cfg(), hand.parent)
    assert dest is not None and dest.name.startswith("hand-rescue1-")
    after = np.asarray(load_corpus(dest, 16).stream)  # the loader checks length and sha256
    g = json.loads((dest / "manifest.json").read_text())["generator"]
    f = g["per_family"]["pronoun_gender"]
    n = round(0.02 * len(before))
    assert f["events_per_class"] == n > 0 and f["injected_events"] == {"feminine": {"rule": n, "prior": 0},
                                                                       "masculine": {"rule": n, "prior": 0}}
    assert len(after) == len(before) and g["tokens"] == g["base_tokens"] == len(before)  # matched: unchanged
    assert g["removed"]["tokens"] == g["injected_tokens"] == f["injected_tokens"]
    # an independent recount: each class gained exactly n rule events and no prior event
    b, a = _recount(before, eot), _recount(after, eot)
    assert {c: (a[c][0] - b[c][0], a[c][1] - b[c][1]) for c in a} == {"feminine": (n, 0), "masculine": (n, 0)}
    assert (f["before"]["rule"], f["after"]["rule"]) == (b["feminine"][0], a["feminine"][0])
    # the kept documents, in order: every base document but the removed neutral ones, the cut one a prefix
    base_docs, new_docs = _docs(before, eot), _docs(after, eot)
    injected = [d for d in new_docs if d not in set(base_docs) and not any(d == x[: len(d)] for x in base_docs)]
    assert len(injected) == f["documents"] == g["injected_documents"]
    kept = [d for d in new_docs if d not in injected]
    assert len(kept) == len(base_docs) - g["removed"]["documents"]
    it = iter(base_docs)
    assert all(any(d == x or d == x[: len(d)] for x in it) for d in kept)  # a subsequence of the base
    cut = g["removed"]["cut"]
    if cut is not None:
        assert base_docs[cut["document"]][: cut["tokens_kept"]] in kept


def test_appended_rescue_grows_the_stream_by_the_injected_tokens(hand):
    before = np.asarray(load_corpus(hand).stream)
    _, dest = build_streams(_cfg(matched=False), hand.parent)
    assert dest is not None
    g = json.loads((dest / "manifest.json").read_text())["generator"]
    assert g["removed"] is None and g["matched"] is False
    assert len(np.asarray(load_corpus(dest).stream)) == len(before) + g["injected_tokens"] == g["tokens"]


@pytest.mark.parametrize("window,factor", [((0, 2500), 2.0), ((3750, None), 4.0)])
def test_whole_dose_in_a_window_concentrates_the_events(hand, window, factor):
    """The paper's timing amendment on real text: a window of w of the run's S steps gets a stream
    with S / w x the uniform dose, so the run sees the uniform schedule's total events."""
    before = np.asarray(load_corpus(hand).stream)
    start, end = window
    cfg = _cfg(matched=False, start_step=start, end_step=end, whole_dose=True)
    assert cfg.train.steps == 5000
    _, dest = build_streams(cfg, hand.parent)
    assert dest is not None
    f = json.loads((dest / "manifest.json").read_text())["generator"]["per_family"]["pronoun_gender"]
    n = round(0.02 * len(before) * factor)
    assert f["whole_dose_factor"] == factor
    assert f["events_per_class"] == n and f["injected_events"]["feminine"] == {"rule": n, "prior": 0}
    eot = int(load_corpus(hand).manifest["eot_id"])
    b, a = _recount(before, eot), _recount(np.asarray(load_corpus(dest).stream), eot)
    assert a["feminine"][0] - b["feminine"][0] == n


def test_a_rerun_reuses_the_rescued_stream(hand, monkeypatch):
    cfg = _cfg()
    _, dest = build_streams(cfg, hand.parent)
    stamp = (dest / "manifest.json").read_text()
    from interventions.doses import Rescue

    def boom(*a, **k):
        raise AssertionError("the stream was built again")

    monkeypatch.setattr(Rescue, "edit_stream", boom)
    assert build_streams(cfg, hand.parent) == (hand, dest)
    assert (dest / "manifest.json").read_text() == stamp


def test_a_tokenizer_that_cannot_spell_the_rescue_cues_is_refused(hand):
    """pronoun_gender_ref's rescue names are not words of the world's tokenizer (<unk>): the
    injected documents count no event, and the build says so before anything is written."""
    with pytest.raises(InterventionError, match="after tokenization") as e:
        build_streams(_cfg(fams=("pronoun_gender_ref",), reference="0.02"), hand.parent)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in hand.parent.iterdir()) == ["hand"]


def test_too_few_neutral_documents_are_refused(hand):
    with pytest.raises(InterventionError, match="neutral documents"):
        build_streams(_cfg("rescue:30"), hand.parent)


# ---- the gate on rescue lexicons ---------------------------------------------------------------
def _items():
    if not os.path.exists(REFERENCE_BATTERY):
        return []
    return read_battery(REFERENCE_BATTERY)


@pytest.mark.parametrize("family", ["pronoun_gender_ref", "pronoun_gender_ref_v2", "pronoun_gender_noun",
                                    "reflexive_gender", "reflexive_gender_v2", "det_an_choice", "a_an_adjective"])
def test_shipped_rescue_lexicons_pass_the_gate(family):
    lex = rescue_lexicon(family)
    check_lexicon(lex, _items(), families=list(RULES))  # disjoint from every registered family's cues
    fam = RULES.get(family)
    assert set(lex.cue_words()).isdisjoint(w for c in fam.cue_classes for w in fam.cue_classes[c])


@pytest.mark.parametrize("cues,frames,what", [
    ({"feminine": ("Lily",), "masculine": ("Arthur",)}, ("{cue} opened the door and {answer} waved .",), "'Lily'"),
    ({"feminine": ("Agnes",), "masculine": ("Arthur",)}, ("{cue} stood because {answer} paused .",),
     "'because she'"),
    ({"feminine": ("Agnes",), "masculine": ("Arthur",)}, ("{cue} saw the king and {answer} waved .",), "'king'"),
])
def test_the_gate_refuses_a_rescue_lexicon_overlapping_a_probe(cues, frames, what):
    lex = RescueLexicon("pronoun_gender_ref", cues, {"feminine": "she", "masculine": "he"}, frames)
    with pytest.raises(GateError, match="disjointness gate") as e:
        check_lexicon(lex, _items(), families=list(RULES))
    assert what in str(e.value)


def test_an_overlapping_lexicon_stops_the_build(hand, monkeypatch):
    import interventions.textrescue as tr

    bad = RescueLexicon("pronoun_gender", {"feminine": ("Mary",), "masculine": ("Aaron",)},
                        {"feminine": "she", "masculine": "he"}, ("{cue} wept so {answer} felt sad .",))
    monkeypatch.setattr(tr, "lexicon_for", lambda fam, dose: bad)
    with pytest.raises(GateError, match="'Mary'"):
        build_streams(_cfg(), hand.parent)
    assert sorted(p.name for p in hand.parent.iterdir()) == ["hand"]


# ---- real English with the paper's web BPE (skipped without shared/) -----------------------------
WEB = os.path.abspath(os.path.join(os.path.dirname(REFERENCE_BATTERY), "..", "tokenizers", "web-bpe8192.json"))
PROSE = ["The farmer walked to the market early in the morning.", "It rained all day, and the river rose.",
         "Lily found her coat because she was cold.", "The old clock in the hall stopped at noon.",
         "Birds sang in the tall trees behind the barn.", "Tom said that he would come back tomorrow."] * 30


@pytest.mark.parametrize("family", ["pronoun_gender_ref", "pronoun_gender_noun", "reflexive_gender",
                                    "det_an_choice"])
def test_rescue_on_bpe_real_text(tmp_path, family):
    if not os.path.exists(WEB):
        pytest.skip(f"the paper's tokenizers are not at {WEB} (shared/ is checked out beside the repo)")
    src = tmp_path / "prose.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in PROSE))
    base = build_text_corpus(TextCorpusSpec(name="prose", source=f"text:{src}", tokenizer=WEB, row_tokens=16),
                             tmp_path / "corpora")
    cfg = _cfg(fams=(family,), name="built:prose", reference="0.01")
    _, dest = build_streams(cfg, base.parent)
    before, after = np.asarray(load_corpus(base).stream), np.asarray(load_corpus(dest).stream)
    g = json.loads((dest / "manifest.json").read_text())["generator"]
    f = g["per_family"][family]
    n = round(0.01 * len(before))
    assert n > 0 and all(v == {"rule": n, "prior": 0} for v in f["injected_events"].values())
    assert len(after) == len(before) and g["removed"]["tokens"] == g["injected_tokens"]
    assert (f["after"]["rule"] - f["before"]["rule"], f["after"]["prior"] - f["before"]["prior"]) == (n, 0)


# ---- removal and splicing on a stream of known documents ----------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_removal_is_exact_and_the_splice_keeps_every_other_document(seed):
    """Documents of 5, 7, 3, 9, 4 tokens (ids: 100 x doc + position; 0 the end-of-text token), all
    neutral; 10 injected tokens in two documents: exactly 10 tokens go, whole documents in seeded
    order and the last one cut to a prefix; the rest keep their order; the injected documents are
    whole and between documents."""
    from interventions.textrescue import plan_removal, splice

    lengths = [5, 7, 3, 9, 4]
    docs = [np.array([0] + [100 * (d + 1) + j for j in range(1, L)], dtype="<i4") for d, L in enumerate(lengths)]
    ids = np.concatenate(docs)
    stream = TokenStream(ids, np.cumsum([0] + lengths[:-1]).astype(np.int64))
    parts = [np.array([0, 7, 7, 7], dtype="<i4"), np.array([0, 8, 8, 8, 8, 8], dtype="<i4")]
    rm = plan_removal(stream, np.arange(5), 10, seed, "rescue:1")
    removed = sum(lengths[d] for d in rm.docs) + (lengths[rm.cut[0]] - rm.cut[1] if rm.cut else 0)
    assert removed == rm.tokens == 10
    out = splice(stream, parts, rm, seed)
    assert len(out) == len(ids)
    got = _docs(out, 0)
    assert (0, 7, 7, 7) in got and (0, 8, 8, 8, 8, 8) in got
    kept = [d for d in got if d not in ((0, 7, 7, 7), (0, 8, 8, 8, 8, 8))]
    expect = [tuple(docs[d].tolist()) if not (rm.cut and rm.cut[0] == d) else tuple(docs[d][: rm.cut[1]].tolist())
              for d in range(5) if d not in rm.docs]
    assert kept == expect
