"""Rule-versus-prior families and their support counters on BPE streams (runner.world.rvp,
runner.data.matching, runner.data.rvp_support), with the paper's tokenizers."""

import os

import numpy as np
import pytest

from runner.data.matching import Scan, TokenStream, TokenTable, form_set
from runner.data.rvp_support import count_rvp, cue_report, empty_modes, family_sites
from runner.world.rules import RULES
from runner.world.rvp import (
    PAPER_FAMILIES,
    LexiconError,
    RuleVsPrior,
    derive_from_battery,
    expand_families,
    families_from_battery,
)
from tests.helpers import REFERENCE_BATTERY

TOKENIZERS = os.path.join(os.path.dirname(REFERENCE_BATTERY), "..", "tokenizers")


def _tokenizer(name: str):
    from tokenizers import Tokenizer

    path = os.path.abspath(os.path.join(TOKENIZERS, f"{name}-bpe8192.json"))
    if not os.path.exists(path):
        pytest.skip(f"the paper's tokenizers are not at {path} (shared/ is checked out beside the repo)")
    return Tokenizer.from_file(path)


def _stream(tok, docs: list[str]) -> TokenStream:
    """Each document after an end-of-text token, as a built real-text corpus stores them."""
    eot = tok.token_to_id("<|endoftext|>")
    return TokenStream.from_documents([[eot] + tok.encode(d).ids for d in docs], [eot])


# Hand-made documents; the expected counts below were done by hand from their tokens
# (TinyStories BPE-8192): "rhea" is " r" + "he" + "a", "Sheila" is " She" + "ila", "hehe" is
# " he" + "he", a document-initial "she" is "s" + "he", '"he' is ' "' + "he".
DOCS = [
    "Lily smiled because she was happy.",
    "Tom cried. Then Lily said that he was sad.",
    "Sue laughed",  # the next document's "she" is not in Sue's window
    "she ran home.",
    'Sue fed the rhea and Sheila said hehe. "she ran," said Ben.',  # no "he" inside words: Sue -> she
    "Emma washed herself. Ben enjoyed himself. Mia hurt himself.",
    "An owl saw an apple and a egg near a tree. The rhea is old.",  # "rhe|a is" is not "a is"
    "The queen said that she liked Ethel. Mom smiled because she won.",
]


def _c(d, rule, prior, cues):
    return (d["rule"], d["prior"], d["cues"]) == (rule, prior, cues)


def test_every_mode_on_a_hand_made_bpe_stream():
    tok = _tokenizer("tinystories")
    got = count_rvp(_stream(tok, DOCS), tok, PAPER_FAMILIES)
    ref = got["pronoun_gender_ref_v2"]
    # feminine cues: Lily, Lily, Sue, Sue, Emma, Mia; Lily -> she, Lily -> he, Sue -> (boundary), Sue -> she
    assert _c(ref["feminine"]["windowed"], 2, 1, 6) and ref["feminine"]["windowed"]["ratio"] == pytest.approx(1.5)
    assert _c(ref["masculine"]["windowed"], 1, 0, 3)  # Tom -> he; Ben, Ben: no pronoun after
    # frame bigram: " because she" twice, no " because he" / " when ..."
    assert _c(ref["feminine"]["frame"], 2, 0, 2) and _c(ref["masculine"]["frame"], 0, 2, 2)
    noun = got["pronoun_gender_noun"]
    assert _c(noun["feminine"]["windowed"], 2, 0, 2)  # queen -> she, Mom (capitalised) -> she
    assert _c(noun["masculine"]["windowed"], 0, 0, 0) and noun["masculine"]["windowed"]["ratio"] is None
    refl = got["reflexive_gender"]
    assert _c(refl["feminine"]["windowed"], 1, 1, 6)  # Emma -> herself, Mia -> himself
    assert _c(refl["masculine"]["windowed"], 1, 0, 3)  # Ben -> himself
    assert _c(refl["feminine"]["frame"], 1, 2, 3) and _c(refl["masculine"]["frame"], 2, 1, 3)
    for fam in ("det_an_choice", "a_an_adjective"):  # the same article counts for both
        a = got[fam]
        assert _c(a["vowel"]["a_an"], 2, 1, 3)  # An owl, an apple | a egg
        assert _c(a["consonant"]["a_an"], 1, 0, 1)  # a tree
    assert _c(got["det_an_choice"]["vowel"]["frame"], 1, 0, 1)  # " saw an apple"
    assert _c(got["a_an_adjective"]["vowel"]["frame"], 0, 0, 0)


def test_windows_stop_at_document_boundaries_and_at_k():
    tok = _tokenizer("tinystories")
    fam = "pronoun_gender_ref"
    one = count_rvp(_stream(tok, ["Sue laughed and then she left."]), tok, [fam])[fam]["feminine"]["windowed"]
    two = count_rvp(_stream(tok, ["Sue laughed and then", "she left."]), tok, [fam])[fam]["feminine"]["windowed"]
    assert _c(one, 1, 0, 1) and _c(two, 0, 0, 1)
    far = "Sue" + " la" * 16 + " she"  # " la" is one token: she is 17 tokens after Sue
    assert count_rvp(_stream(tok, [far]), tok, [fam], k=16)[fam]["feminine"]["windowed"]["rule"] == 0
    assert count_rvp(_stream(tok, [far]), tok, [fam], k=17)[fam]["feminine"]["windowed"]["rule"] == 1


def test_sites_give_positions_classes_and_forms():
    tok = _tokenizer("tinystories")
    s = family_sites(_stream(tok, DOCS[:2]), "pronoun_gender_ref", tok, "windowed")
    # stream: <eot> Lily smiled because she ... | <eot> Tom cried . Then Lily said that he ...
    eot2 = 1 + len(tok.encode(DOCS[0]).ids)
    assert s.cue_start.tolist() == [1, eot2 + 1, eot2 + 5]
    assert s.answer_start.tolist() == [4, eot2 + 8, eot2 + 8]
    assert [s.classes[c] for c in s.cls] == ["feminine", "masculine", "feminine"]
    assert s.rule.tolist() == [True, True, False] and s.doc.tolist() == [0, 1, 1]  # one document per <eot>
    assert [s.forms[f] for f in s.form] == [" she", " he", " he"]
    a = family_sites(_stream(tok, [DOCS[6]]), "det_an_choice", tok, "a_an")
    ids = _stream(tok, [DOCS[6]]).ids
    assert [tok.decode([int(ids[p])]) for p in a.answer_start] == ["An", " an", " a", " a"]
    assert [tok.decode([int(ids[p])]) for p in a.cue_start] == [" owl", " apple", " egg", " tree"]
    assert a.rule.tolist() == [True, True, False, True]


def test_multi_token_answers_and_cues_on_the_web_tokenizer():
    tok = _tokenizer("web")
    assert len(tok.encode(" herself").ids) == 2 and len(tok.encode(" Lily").ids) == 2
    docs = ["Then John washed herself. Then Lily said she was sad."]  # " John" is one token, "John" is not
    fam = count_rvp(_stream(tok, docs), tok, ["reflexive_gender_v2", "pronoun_gender_ref_v2"])
    assert _c(fam["reflexive_gender_v2"]["masculine"]["windowed"], 0, 1, 1)  # John -> " her" + "self"
    assert fam["pronoun_gender_ref_v2"]["feminine"]["windowed"]["cues"] == 0  # " Lily" is two tokens
    multi = count_rvp(_stream(tok, docs), tok, ["pronoun_gender_ref_v2"], multi_token_cues=True)
    assert _c(multi["pronoun_gender_ref_v2"]["feminine"]["windowed"], 1, 0, 1)


def test_whole_word_matching_on_sequences():
    tok = _tokenizer("web")
    table = TokenTable.of(tok)
    fs = form_set(table, [(" Quentinius", 0), (" Quentin", 1)])
    assert sorted(len(s) for s in fs.seqs) == [3, 4]  # longer than the packed key's three tokens
    ids = np.array(tok.encode(" Quentinius went home. Quentin said no. Quentinius!").ids)
    m = Scan(TokenStream.from_flat(ids), table, [fs]).match(fs)
    assert m.label.tolist() == [0, 1, 0] and m.start.tolist() == [0, 7, 13]  # not " Quentin" inside " Quentinius"


def test_paper_tokenizers_single_token_cues():
    """Which cue words the windowed count sees (one token, with or without a leading space) under
    the paper's two BPE-8192 vocabularies: all of them on TinyStories; on web no girl's name."""
    ts, web = _tokenizer("tinystories"), _tokenizer("web")
    fams = ["pronoun_gender_ref_v2", "pronoun_gender_noun"]
    for fam, classes in cue_report(fams, ts).items():
        assert all(not r["not_counted"] for r in classes.values()), fam
    w = cue_report(fams, web)
    assert w["pronoun_gender_ref_v2"]["feminine"]["counted"] == []
    assert w["pronoun_gender_ref_v2"]["masculine"]["counted"] == ["Ben", "John", "Mark"]
    assert w["pronoun_gender_noun"]["feminine"]["counted"] == ["mom", "woman"]
    assert w["pronoun_gender_noun"]["masculine"]["counted"] == ["king", "man"]
    for tok in (ts, web):  # the answers' space forms are single tokens in both
        for word in (" she", " he", " She", " He", " an", " a", " An", " A", " himself"):
            assert len(tok.encode(word).ids) == 1, word


def test_no_event_is_none_never_one():
    tok = _tokenizer("tinystories")
    got = count_rvp(_stream(tok, ["Nothing to see here."]), tok, ["pronoun_gender_ref", "det_an_choice"])
    assert all(v[m]["ratio"] is None for f in got.values() for v in f.values() for m in v)
    assert empty_modes(got) == [("pronoun_gender_ref", "frame"), ("pronoun_gender_ref", "windowed"),
                                ("det_an_choice", "a_an"), ("det_an_choice", "frame")]


# ---- families ------------------------------------------------------------------------------------
def test_paper_families_are_registered_beside_the_built_in_ones():
    assert set(PAPER_FAMILIES) == {"pronoun_gender_ref", "pronoun_gender_ref_v2", "pronoun_gender_noun",
                                   "reflexive_gender", "reflexive_gender_v2", "det_an_choice", "a_an_adjective"}
    assert {"pronoun_gender", "number_agreement"} <= set(RULES.names())
    assert RULES.get("pronoun_gender").support_modes == ("windowed", "contested")
    assert expand_families(["pronoun_gender", "paper", "det_an_choice"]) == ("pronoun_gender",) + PAPER_FAMILIES
    noun = RULES.get("pronoun_gender_noun")
    assert isinstance(noun, RuleVsPrior) and "mom" in noun.cue_classes["feminine"]
    assert noun.prior_answer("feminine") == "he" and noun.support_modes == ("windowed", "frame")
    with pytest.raises(LexiconError, match="battery file"):
        noun.battery()


def test_shipped_lexicon_is_the_reference_battery_s(reference_battery):
    """The cue words and frames shipped in lexicons/rvp4.json are what the battery derives."""
    from runner.world.batteries import read_battery

    items = read_battery(reference_battery)
    derived = families_from_battery(items, PAPER_FAMILIES)
    for name in PAPER_FAMILIES:
        shipped, d = RULES.get(name), derived[name]
        assert shipped.cue_classes == d.cue_classes and shipped.frames == d.frames, name
    assert derived["pronoun_gender_ref"].cue_classes["feminine"] == ("Anna", "Emma", "Jane", "Lily", "Mia", "Sue")
    assert derived["det_an_choice"].frames["vowel"][0] == ("ate an ant", "ate a ant")


def test_battery_family_without_lexicon_names_the_fix(reference_battery):
    from runner.world.batteries import read_battery

    items = read_battery(reference_battery)
    with pytest.raises(LexiconError, match=r"'irregular_past' has no lexicon: add an entry .*lexicons/rvp4\.json"):
        families_from_battery(items, ["pronoun_gender_ref", "irregular_past"])
    with pytest.raises(LexiconError, match="has no lexicon"):
        families_from_battery(items)  # every family of the battery: 8 of its 15 have none
    with pytest.raises(LexiconError, match="no cue words"):
        RuleVsPrior(name="x", cue_classes={"feminine": (), "masculine": ("Tom",)},
                    rule_answer={"feminine": "she", "masculine": "he"})
    with pytest.raises(LexiconError, match="starts with none of the rule answers"):
        derive_from_battery([i for i in items if i.family == "pronoun_gender_ref"], "windowed",
                            {"feminine": "her", "masculine": "he"})


def test_count_support_routes_rule_versus_prior_families():
    """The cached corpus path (count_support on rows) counts them with the same counter."""
    from runner.data.support import count_support

    tok = _tokenizer("tinystories")
    eot = tok.token_to_id("<|endoftext|>")
    ids = [[eot] + tok.encode(d).ids for d in DOCS]
    rows = np.full((len(ids), max(map(len, ids))), -1, dtype=np.int32)
    for i, r in enumerate(ids):
        rows[i, : len(r)] = r
    got = count_support(rows, tok, ["pronoun_gender_ref_v2", "det_an_choice"], pad_id=-1, block=3)
    want = count_rvp(_stream(tok, DOCS), tok, ["pronoun_gender_ref_v2", "det_an_choice"])
    assert got == want
