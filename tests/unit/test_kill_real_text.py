"""The paper's kill on real-text (``built:``) corpora: a hand-made flat stream (documents
separated by the end-of-text token) flips exactly the expected sites and nothing else, the
edited stream keeps the token count and the real-text format (``load_corpus`` checks its sha256),
a rerun reuses it, and the doses with no real-text edit are refused naming why. Offline: the
documents are written here; the BPE case reads the KJV sample with the paper's web tokenizer."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from interventions.registry import InterventionError
from runner.config import RunConfig
from runner.data.corpora import load_corpus, world_tokenizer
from runner.data.shards import stream_digest
from runner.data.streams import build_streams
from runner.data.support import corpus_support
from runner.data.textcorpus import TextCorpusSpec, build_text_corpus
from tests.helpers import REFERENCE_BATTERY, world_text_corpus

# One document per line; each is preceded in the stream by <bos> (the corpus's end-of-text token).
# Stream positions (by hand): 0 <bos> 1 Mary .. 4 she | 8 <bos> 9 Tom .. 12 she | 16 <bos> 17 Anna
# 18 Lily .. 21 she | 25 <bos> .. 29 Sue 30 . | 31 <bos> 32 she .. | 36 <bos> 37 Emma .. 40 he .. 43 . |
# 44 <bos> 45 Lucy .. 50 she .. 53 .
DOCS = [
    "Mary cried because she was sad .",  # feminine rule: site 4
    "Tom cried because she was sad .",  # masculine prior (not targeted): 12 stays
    "Anna Lily laughed because she was calm .",  # two feminine cues, one site: 21
    "the dog saw Sue .",  # Sue's window ends with her document: the next document's she@32 is not hers
    "she was sad .",
    "Emma cried because he was sad .",  # feminine prior
    "Lucy saw the cat . she was calm .",  # feminine rule: site 50
]
SITES = [4, 21, 50]
N_TOKENS = 54
S, C = 4, 1  # feminine rule (Mary, Anna, Lily, Lucy) and prior (Emma) events


@pytest.fixture
def hand(tmp_path) -> Path:
    """The documents as a real-text corpus (world vocabulary, <bos> as the end-of-text token)."""
    return world_text_corpus(DOCS, tmp_path / "corpora", row_tokens=16)


def _cfg(dose: str, fams=("pronoun_gender",), name: str = "built:hand", **iv) -> RunConfig:
    return RunConfig.model_validate({"corpus": {"name": name, "story_tokens": 16}, "probes": {"families": fams},
                                     "dose": dose, "intervention": {"families": fams, **iv}})


def _dosed(cfg: RunConfig, corpora: Path) -> Path:
    """The intervened stream's folder (built, or reused)."""
    _, dest = build_streams(cfg, corpora)
    assert dest is not None
    return dest


def _feminine(manifest: dict, fam: str = "pronoun_gender") -> dict:
    return manifest["generator"]["per_family"][fam]["classes"]["feminine"]


def test_hand_stream_is_what_the_sites_assume(hand):
    tok = world_tokenizer()
    ids = np.asarray(load_corpus(hand).stream)
    assert len(ids) == N_TOKENS
    assert [tok.id_to_token(int(ids[i])) for i in (*SITES, 12, 32, 40)] == ["she"] * 5 + ["he"]
    assert np.flatnonzero(ids == tok.token_to_id("<bos>")).tolist() == [0, 8, 16, 25, 31, 36, 44]


def test_kill_at_one_flips_exactly_the_sites_in_the_real_text_format(hand):
    base = load_corpus(hand)
    before = np.array(base.stream)
    dest = _dosed(_cfg("kill:1.0"), hand.parent)
    assert dest.parent == hand.parent and dest.name.startswith("hand-kill1.0-")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "tokenizer.json", "tokens.npy"]
    assert (dest / "tokenizer.json").read_bytes() == (hand / "tokenizer.json").read_bytes()
    edited = load_corpus(dest, 16)  # the loader checks length and sha256 against the manifest
    after = np.asarray(edited.stream)
    assert after.dtype == np.dtype("<i4") and len(after) == N_TOKENS
    assert np.flatnonzero(after != before).tolist() == SITES
    assert {world_tokenizer().id_to_token(int(after[i])) for i in SITES} == {"he"}
    m = edited.manifest
    assert m["sha256"] == stream_digest(after) != base.manifest["sha256"]
    assert m["n_tokens"] == base.n_tokens and m["n_docs"] == len(DOCS) == base.manifest["n_docs"]
    assert {k: m[k] for k in ("format", "bos_id", "eot_id", "pad_id", "row_tokens", "vocab_size", "tokenizer")} == \
        {k: base.manifest[k] for k in ("format", "bos_id", "eot_id", "pad_id", "row_tokens", "vocab_size", "tokenizer")}
    assert edited.rows.shape == base.rows.shape == (3, 16)
    g = m["generator"]
    assert (g["kind"], g["edit"], g["base_corpus"], g["tokens_changed"]) == ("kill", "paper-1", str(hand), 3)
    f = _feminine(m)
    assert (f["rule"], f["prior"], f["eligible_sites"], f["eligible_events"]) == (S, C, 3, 4)
    assert (f["flipped_sites"], f["flipped_events"], f["closed_form_ratio"], f["realised_ratio"]) == (3, 4, 0.0, 0.0)
    assert f["recount"] == {"rule": 0, "prior": S + C, "ratio": 0.0}
    assert g["per_family"]["pronoun_gender"]["unflippable_events"] == 0
    assert m["support"]["pronoun_gender"]["feminine"]["windowed"]["rule"] == 0
    assert m["support"] == corpus_support(dest, ["pronoun_gender"])  # counted as `ungrok support` counts
    assert np.array_equal(np.asarray(load_corpus(hand).stream), before)  # the base is untouched


def test_kill_at_p_flips_the_seeded_subset_and_recount_equals_realised(hand):
    p, seed = 0.5, 3
    dest = _dosed(_cfg(f"kill:{p}", seed=seed), hand.parent)
    draw = np.random.default_rng([seed, zlib.crc32(b"pronoun_gender")]).random(len(SITES)) < p
    expected = [s for s, d in zip(SITES, draw) if d]
    after, before = np.asarray(load_corpus(dest).stream), np.asarray(load_corpus(hand).stream)
    assert np.flatnonzero(after != before).tolist() == expected
    f = _feminine(json.loads((dest / "manifest.json").read_text()))
    flipped = sum(2 if s == 21 else 1 for s in expected)  # site 21 decides Anna's and Lily's events
    assert f["flipped_sites"] == len(expected) and f["flipped_events"] == flipped
    assert f["closed_form_ratio"] == pytest.approx((1 - p) * S / (C + p * S))
    assert (f["recount"]["rule"], f["recount"]["prior"]) == (S - flipped, C + flipped)
    assert f["realised_ratio"] == pytest.approx((S - flipped) / (C + flipped)) == f["recount"]["ratio"]


def test_kill_ratio_solves_p_on_the_real_text_corpus(hand):
    dest = _dosed(_cfg("kill:ratio=1"), hand.parent)
    g = json.loads((dest / "manifest.json").read_text())["generator"]["per_family"]["pronoun_gender"]
    assert g["rate"] == pytest.approx((S - 1 * C) / (S * 2)) and g["target_ratio"] == 1.0
    assert g["classes"]["feminine"]["closed_form_ratio"] == pytest.approx(1.0)


def test_a_rerun_reuses_the_stream(hand, monkeypatch):
    cfg = _cfg("kill:1.0")
    dest = _dosed(cfg, hand.parent)
    stamp = (dest / "manifest.json").read_text()
    from interventions.doses import Kill

    def boom(*a, **k):
        raise AssertionError("the stream was edited again")

    monkeypatch.setattr(Kill, "edit_stream", boom)
    assert build_streams(cfg, hand.parent) == (hand, dest)
    assert (dest / "manifest.json").read_text() == stamp
    assert not [p for p in hand.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("dose,what", [("kill-contested:0.5", "kill-contested edits the built-in world's rows only"),
                                       ("rescue-contest:1", "rescue-contest edits the built-in world's rows only")])
def test_doses_without_a_real_text_edit_are_refused(hand, dose, what):
    with pytest.raises(InterventionError, match="real-text") as e:
        build_streams(_cfg(dose), hand.parent)
    assert what in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in hand.parent.iterdir()) == ["hand"]  # nothing written


# ---- real English with the paper's web BPE (skipped without shared/) -----------------------------
WEB = os.path.abspath(os.path.join(os.path.dirname(REFERENCE_BATTERY), "..", "tokenizers", "web-bpe8192.json"))
VERSES = [  # tests/unit/test_rvp_real_text.py: woman -> she twice (feminine rule), king -> she (masculine prior)
    "And the woman conceived, and bare a son: and when she saw him that he was a goodly child, she hid him three "
    "months.",
    "And when the woman of Tekoah spake to the king, she fell on her face to the ground, and did obeisance, and said, "
    "Help, O king.",
    "When Judah saw her, he thought her to be an harlot; because she had covered her face.",
]


def test_kill_on_bpe_real_text_flips_she_to_he(tmp_path):
    if not os.path.exists(WEB):
        pytest.skip(f"the paper's tokenizers are not at {WEB} (shared/ is checked out beside the repo)")
    from tokenizers import Tokenizer

    src = tmp_path / "verses.txt"
    src.write_text("\n".join(VERSES) + "\n")
    spec = TextCorpusSpec(name="verses", source=f"text:{src}", tokenizer=WEB, row_tokens=16)
    base = build_text_corpus(spec, tmp_path / "corpora")
    dest = _dosed(_cfg("kill:1.0", ("pronoun_gender_noun",), "built:verses"), base.parent)
    before, after = np.asarray(load_corpus(base).stream), np.asarray(load_corpus(dest).stream)
    tok = Tokenizer.from_file(WEB)
    changed = np.flatnonzero(after != before)
    assert [tok.decode([int(before[i])]) for i in changed] == [" she", " she"]
    assert [tok.decode([int(after[i])]) for i in changed] == [" he", " he"]
    f = _feminine(json.loads((dest / "manifest.json").read_text()), "pronoun_gender_noun")
    assert (f["rule"], f["prior"], f["flipped_events"]) == (2, 0, 2)
    assert f["recount"] == {"rule": 0, "prior": 2, "ratio": 0.0} and f["closed_form_ratio"] == 0.0
