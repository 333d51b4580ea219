"""Kill, rescue, the disjointness gate and timing windows, on hand-made and generated streams."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import interventions  # noqa: F401  (registers kill and rescue)
from interventions import GateError, check_disjoint
from interventions.induction import flip_induction, inject_induction
from runner.config import InterventionConfig, RunConfig
from runner.data.corpora import world_tokenizer
from runner.data.streams import DataPlan, Streams
from runner.data.support import contested_counts, count_support
from runner.doses import parse_dose
from runner.world import vocab as V
from runner.world.rules import RULES

PG, NA = RULES.get("pronoun_gender"), RULES.get("number_agreement")


def _rows(tok, *stories, width=64):
    pad = tok.token_to_id(V.PAD)
    rows = np.full((len(stories), width), pad, dtype=np.int32)
    for i, text in enumerate(stories):
        ids = tok.encode(f"{V.BOS} {text}").ids
        rows[i, : len(ids)] = ids
    return rows


# Story 0: Tom sets "cried -> he"; Sue (she) beats the copy: a rule-winning event; Mary then
# agrees with Sue's "she" (not contested unless Sue was flipped); the last Sue loses to the copy.
STORY = ("Tom cried because he was sad . Sue cried because she was happy . "
         "Mary cried because she was calm . Sue cried because he was sad .")
# Story 1: number agreement: "park -> were" then a singular noun shows "was": one rule-winning event.
STORY_NA = "the dogs at the park were happy . the cat at the park was sad ."


def test_flip_counts_on_a_hand_made_stream_are_exact():
    tok = world_tokenizer()
    rows = _rows(tok, STORY, STORY_NA)
    # rate 1: Sue is flipped; the edited history makes Mary's "she" contested too, and it is flipped.
    res = flip_induction(rows, PG, tok, 1.0, seed=0)
    assert res.eligible == {"feminine": 2, "masculine": 0} and res.flipped == {"feminine": 2, "masculine": 0}
    # rate 0: only Sue's event is rule-winning on the unedited story, and nothing changes.
    res0 = flip_induction(rows, PG, tok, 0.0, seed=0)
    assert res0.eligible == {"feminine": 1, "masculine": 0} and res0.n_flipped == 0
    assert (res0.rows == rows).all()
    na = flip_induction(rows, NA, tok, 1.0, seed=0)
    assert na.flipped == {"singular": 1, "plural": 0}
    text = tok.decode(na.rows[1].tolist())
    assert "the cat at the park were sad" in text


def test_kill_preserves_token_count_and_positions():
    tok = world_tokenizer()
    from runner.config import CorpusConfig
    from runner.data.corpora import synthetic_rows

    rows = synthetic_rows(CorpusConfig(name="stories", n_stories=400, seed=3))
    res = flip_induction(rows, PG, tok, 0.645, seed=1)
    pad = tok.token_to_id(V.PAD)
    assert res.rows.shape == rows.shape
    assert ((res.rows == pad) == (rows == pad)).all()  # every position keeps its token count
    changed = res.rows != rows
    assert changed.sum() == res.n_flipped > 0
    she, he = tok.token_to_id("she"), tok.token_to_id("he")
    assert set(zip(rows[changed].tolist(), res.rows[changed].tolist())) <= {(she, he), (he, she)}
    assert 0.55 < res.n_flipped / sum(res.eligible.values()) < 0.74  # rate 0.645 over ~1k events
    full = flip_induction(rows, PG, tok, 1.0, seed=1)
    after = contested_counts(full.rows, PG, tok)
    assert sum(c.rule for c in after.values()) == 0  # no rule-winning event is left


def test_flip_is_deterministic_in_its_seed():
    tok = world_tokenizer()
    from runner.config import CorpusConfig
    from runner.data.corpora import synthetic_rows

    rows = synthetic_rows(CorpusConfig(name="stories", n_stories=200, seed=4))
    a, b = flip_induction(rows, PG, tok, 0.5, 9), flip_induction(rows, PG, tok, 0.5, 9)
    c = flip_induction(rows, PG, tok, 0.5, 10)
    assert (a.rows == b.rows).all() and not (a.rows == c.rows).all()


@pytest.mark.parametrize("family,n", [(PG, 37), (NA, 11), (PG, 1)])
def test_injected_event_count_is_counted_after_tokenization(family, n):
    tok = world_tokenizer()
    res = inject_induction(family, tok, n, 64, seed=2)
    assert res.events == n
    assert (inject_induction(family, tok, n, 64, seed=2, chunk=2).rows == res.rows).all()  # chunking changes nothing
    counts = count_support(res.rows, tok, [family.name], pad_id=tok.token_to_id(V.PAD))[family.name]
    assert sum(c["contested"]["rule"] for c in counts.values()) == n
    assert sum(c["contested"]["prior"] for c in counts.values()) == 0
    words = {w for t in res.texts(tok) for w in t.split()}
    probe_cues = {c for cls in family.cue_classes.values() for c in cls}
    assert not words & probe_cues and words & set(res.cues)
    assert res.texts(tok)[0].startswith(V.BOS)


def test_gate_passes_real_injection_against_the_real_battery():
    tok = world_tokenizer()
    items = PG.battery(16, 8) + NA.battery(16, 8)
    for fam in (PG, NA):
        res = inject_induction(fam, tok, 50, 64, seed=0)
        check_disjoint(items, res.cues, partial(res.texts, tok), res.rows, tok)


def test_gate_names_a_probe_cue_used_as_injected_cue():
    items = PG.battery(8, 4)
    cue = next(w for w in items[0].prefix.split() if w in PG.cue_classes["feminine"] + PG.cue_classes["masculine"])
    with pytest.raises(GateError, match=f"injected cue '{cue}' is a probe cue"):
        check_disjoint(items, ["Ava", cue], ["Ava cried so she felt sad ."])


def test_gate_names_a_probe_prefix_found_in_injected_text():
    tok = world_tokenizer()
    items = PG.battery(8, 4)
    leaked = [f"{V.BOS} {items[3].prefix} she was sad ."]
    rows = _rows(tok, leaked[0].removeprefix(V.BOS + " "))
    with pytest.raises(GateError, match="occurs in injected text") as e:
        check_disjoint(items, ["Ava"], leaked, rows, tok)
    assert items[3].prefix.strip() in str(e.value)
    neutral = next(it for it in items if it.condition == "neutral")
    with pytest.raises(GateError, match="prior-pull"):
        check_disjoint(items, [], [neutral.prefix + " he"])


def test_windows_switch_the_stream_at_the_right_steps():
    a = np.zeros((64, 4), dtype=np.int32)
    b = np.ones((64, 4), dtype=np.int32)
    plan = DataPlan(64, 64, 4, 0)
    iv = InterventionConfig(start_step=3, end_step=5)
    s = Streams(a, plan, b, DataPlan(64, 64, 4, 0), iv.active)
    seen = [int(s.batch(t).max()) for t in range(8)]
    assert seen == [0, 0, 0, 1, 1, 0, 0, 0]
    always = Streams(a, plan, b, plan, InterventionConfig().active)
    assert all(always.batch(t).min() == 1 for t in range(8))
    # kill streams have the corpus's rows: the same plan picks the same (edited) rows
    assert (Streams(a, plan).batch(3, 1, 3) == a[plan.indices(3)[1:3]]).all()


def test_dose_validation_names_the_problem():
    assert parse_dose("kill:0.437") == ("kill", 0.437)
    with pytest.raises(ValueError, match="kill rate 1.5 must be in"):
        parse_dose("kill:1.5")
    with pytest.raises(ValueError, match="rescue dose -1.0 must be > 0"):
        parse_dose("rescue:-1")
    with pytest.raises(ValueError, match="unknown intervention 'heal'"):
        parse_dose("heal:1")
    with pytest.raises(ValueError, match="end_step"):
        InterventionConfig(start_step=10, end_step=5)
    with pytest.raises(ValueError, match="intervention.families"):
        RunConfig(dose="kill:1.0", intervention={"families": ["number_agreement"]},
                  probes={"families": ["pronoun_gender"]})


def test_undosed_runs_ignore_intervention_settings():
    a = RunConfig()
    b = RunConfig(intervention={"families": ["pronoun_gender"], "start_step": 9})
    assert a.run_id == b.run_id and a.model_dump() == b.model_dump()
    k1 = RunConfig(dose="kill:1.0")
    k2 = RunConfig(dose="kill:1.0", intervention={"start_step": 3000})
    assert k1.run_id != k2.run_id and k1.run_id != a.run_id
