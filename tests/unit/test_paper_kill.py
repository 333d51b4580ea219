"""The paper's kill (interventions.kill) on hand-made streams: exactly the expected sites flip,
closed-form ratio = recount, kill:ratio= solves p, and the contested variant keeps its name."""

import os

import numpy as np
import pytest

from interventions.kill import (
    apply_flips,
    as_rvp,
    check_in_place,
    closed_form,
    default_target,
    draw_flips,
    kill_report,
    plan_kill,
    solve_rate,
)
from interventions.registry import InterventionError
from runner.config import RunConfig
from runner.data.corpora import world_tokenizer
from runner.data.matching import TokenStream, TokenTable, separator_ids
from runner.data.rvp_support import class_counts, family_sites
from runner.doses import DOSES, parse_dose_key
from runner.world.rules import RULES
from tests.helpers import REFERENCE_BATTERY

# word positions (0 = <bos>):  the expected eligible feminine sites are marked below
DOC = ("<bos> Mary cried because she was sad . "        # 1 Mary -> she@4: feminine rule (site 4)
       "Tom cried because she was sad . "               # 8 Tom -> she@11: masculine prior (not targeted)
       "Anna Lily laughed because she was calm . "      # 15 Anna, 16 Lily -> she@19: one site, two events
       "Sue went to the park . the dog saw the cat . "  # 23 Sue: no answer within 16 tokens
       "the cat saw the dog . the cat saw the dog . "
       "Emma cried because he was sad .")               # 47 Emma -> he@50: feminine prior
SITES = [4, 19]


def _world_stream(doc: str = DOC):
    tok = world_tokenizer()
    ids = np.array(tok.encode(doc).ids)
    return tok, TokenStream.from_flat(ids, separator_ids(tok))


def test_kill_at_one_flips_exactly_the_expected_sites():
    tok, stream = _world_stream()
    table = TokenTable.of(tok)
    fam = RULES.get("pronoun_gender")
    plan = plan_kill(stream, fam, table, ("feminine",))
    assert plan.positions.tolist() == SITES and plan.events.tolist() == [1, 2]
    assert plan.before["feminine"]["rule"] == 3 and plan.before["feminine"]["prior"] == 1
    flips = draw_flips(plan, 1.0, seed=0)
    out = apply_flips(stream.ids, plan, flips)
    check_in_place(stream.ids, out, plan.positions[flips], "test")
    assert np.flatnonzero(out != stream.ids).tolist() == SITES
    assert {tok.id_to_token(int(out[i])) for i in SITES} == {"he"}
    assert len(out) == len(stream.ids)
    rep = kill_report(plan, flips, 1.0)["classes"]["feminine"]
    assert rep["flipped_events"] == 3 and rep["closed_form_ratio"] == 0.0 == rep["realised_ratio"]
    recount = class_counts(family_sites(TokenStream(out, stream.starts), as_rvp(fam), table, "windowed"))
    assert (recount["feminine"]["rule"], recount["feminine"]["prior"]) == (0, 4)
    # the masculine class is not targeted: Tom's "she" stays, and now Tom's window is unchanged
    assert out[11] == stream.ids[11]


def test_kill_at_p_flips_a_seeded_independent_subset_and_recount_equals_realised():
    rng = np.random.default_rng(0)
    tok = world_tokenizer()
    names = ["Mary", "Anna", "Lily", "Tom", "John"]
    words = ["<bos>"]
    for _ in range(400):
        words += [str(rng.choice(names)), "cried", "because", str(rng.choice(["she", "he"])), "was", "sad", "."]
    ids = np.array(tok.encode(" ".join(words)).ids)
    stream = TokenStream.from_flat(ids, separator_ids(tok))
    table, fam = TokenTable.of(tok), RULES.get("pronoun_gender")
    plan = plan_kill(stream, fam, table, ("feminine",))
    for p in (0.0, 0.3, 0.7, 1.0):
        flips = draw_flips(plan, p, seed=5)
        assert np.array_equal(flips, draw_flips(plan, p, seed=5))  # seeded
        out = apply_flips(stream.ids, plan, flips)
        assert np.flatnonzero(out != ids).tolist() == plan.positions[flips].tolist()
        rep = kill_report(plan, flips, p)["classes"]["feminine"]
        c = class_counts(family_sites(TokenStream(out, stream.starts), as_rvp(fam), table, "windowed"))["feminine"]
        assert (c["rule"], c["prior"]) == (rep["rule"] - rep["flipped_events"], rep["prior"] + rep["flipped_events"])
        if p in (0.0, 1.0):  # the closed form is exact at the ends, the expectation in between
            assert rep["closed_form_ratio"] == pytest.approx(c["rule"] / c["prior"])
        else:
            assert rep["closed_form_ratio"] == pytest.approx(c["rule"] / c["prior"], rel=0.25)


def test_closed_form_and_solved_rate():
    assert closed_form(100, 10, 0.0) == 10.0
    assert closed_form(100, 10, 1.0) == 0.0
    p = solve_rate(1000, 100, 0.46)
    assert closed_form(1000, 100, p) == pytest.approx(0.46)
    with pytest.raises(ValueError, match="not reachable"):
        solve_rate(100, 100, 2.0)


def test_a_an_kill_flips_an_before_vowel_words_only():
    path = os.path.join(os.path.dirname(REFERENCE_BATTERY), "..", "tokenizers", "tinystories-bpe8192.json")
    if not os.path.exists(path):
        pytest.skip("the paper's tokenizers are not checked out beside the repo")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.abspath(path))
    eot = tok.token_to_id("<|endoftext|>")
    ids = np.array([eot] + tok.encode("An owl saw an apple and a egg near an tree.").ids)
    stream = TokenStream.from_flat(ids, [eot])
    table, fam = TokenTable.of(tok), RULES.get("det_an_choice")
    assert default_target(fam) == "vowel"
    plan = plan_kill(stream, fam, table, ("vowel",))
    out = apply_flips(ids, plan, draw_flips(plan, 1.0, 0))
    assert tok.decode(out[1:].tolist()) == "A owl saw a apple and a egg near an tree."


def test_kill_ratio_dose_parses_and_the_old_edit_keeps_its_name():
    assert parse_dose_key("kill:ratio=0.46") == ("kill", "ratio", 0.46)
    assert {"kill", "kill-contested", "rescue", "rescue-contest"} <= set(DOSES.names())
    assert RunConfig(dose="kill:ratio=0.46").run_id.split("-")[2] == "killratio0.46"
    with pytest.raises(ValueError, match="takes no level"):
        RunConfig(dose="rescue:ratio=2")
    with pytest.raises(ValueError, match="cue class"):
        RunConfig(dose="kill:1.0", intervention={"classes": ["girls"]})
    # the intervention's classes enter every dosed run's id (ids of the earlier edits differ)
    x = RunConfig(dose="kill:1.0", intervention={"classes": ["feminine"]})
    assert RunConfig(dose="kill:1.0").run_id != x.run_id


def test_check_in_place_refuses_a_moved_token():
    a = np.arange(10)
    b = a.copy()
    b[3] = 99
    check_in_place(a, b, np.array([3]), "t")
    with pytest.raises(InterventionError):
        check_in_place(a, b, np.array([4]), "t")
    with pytest.raises(InterventionError):
        check_in_place(a, b[:-1], np.array([3]), "t")
