"""Any battery (issue 16 C): unknown tokens counted and refused, the length-normalised metric,
families that need no registered rule, the start token decided by training, the config hash
unchanged for today's configs, and the battery view of a run's store."""

import json

import numpy as np
import pytest

from runner.config import RunConfig, _omit_defaults, config_hash
from runner.data.corpora import world_tokenizer
from runner.scoring import (
    aggregate,
    battery_for,
    battery_info,
    check_unknown,
    encode_battery,
    init_scores,
    score_attrs,
    stored_bos,
    training_bos,
)
from runner.store import RunDir, RunStore, battery_view
from runner.world.batteries import ProbeItem, read_battery, write_battery
from runner.world.rules import RULES


def _item(i: int, prefix: str, correct: str, distractor: str, family: str = "f", condition: str = "conflict",
          split: str = "heldout") -> ProbeItem:
    return ProbeItem(family=family, condition=condition, probe=f"{family}.{condition}", split=split,
                     template_id="t", prefix=prefix, correct=correct, distractor=distractor, item_id=f"{family}/{i}")


def test_unknown_words_are_counted_and_tied_answers_found():
    tok = world_tokenizer()
    items = [_item(0, "Sue cried because", " she", " he"),  # every word known
             _item(1, "Sue cried because", " zyzzyva", " quokka"),  # both answers unknown: a tie
             _item(2, "Sue xylophoned because", " she", " he")]  # unknown word in the prefix only
    enc = encode_battery(items, tok, tok.token_to_id("<bos>"), n_ctx=64)
    assert enc.unknown.tolist() == [False, True, True]
    assert enc.tied.tolist() == [False, True, False]
    assert enc.token_report() == {"n_items": 3, "n_unknown_items": 2, "n_tied_items": 1}
    assert enc.n_correct.tolist() == [1, 1, 1] and enc.bos_id == tok.token_to_id("<bos>")
    with pytest.raises(ValueError, match=r"2 of 3 items hold words outside the tokenizer's vocabulary .* 1 "):
        check_unknown(enc, 0.5, "probes.battery")
    assert check_unknown(enc, 1.0, "x")["n_unknown_items"] == 2


def test_rvp4_on_the_builtin_world_is_refused_with_the_fix(reference_battery):
    tok = world_tokenizer()
    enc = encode_battery(read_battery(reference_battery), tok, None, n_ctx=64)
    rep = enc.token_report()
    assert rep["n_items"] == 3156 and rep["n_unknown_items"] > 0.9 * 3156 and rep["n_tied_items"] > 2000
    with pytest.raises(ValueError, match=r"probes\.max_unknown = 1 \(--max-unknown 1; now 0\.5\)"):
        check_unknown(enc, 0.5, "probes.battery")


def test_multi_token_lengths_and_length_normalised_difference():
    tok = world_tokenizer()
    items = [_item(0, "Sue cried", " because she", " he"), _item(1, "Sue cried", " he", " because he")]
    enc = encode_battery(items, tok, None, n_ctx=64)
    assert enc.n_correct.tolist() == [2, 1] and enc.n_distractor.tolist() == [1, 2]
    lpc, lpd = np.array([-4.0, -1.0]), np.array([-3.0, -6.0])
    a = aggregate(items, lpc, lpd, enc.n_correct, enc.n_distractor)
    # item 0: -4/2 - -3/1 = +1; item 1: -1/1 - -6/2 = +2; the sums say -1 and +5
    assert a["f/lnd_conflict_heldout"] == pytest.approx(1.5)
    assert a["f/acc_conflict_heldout"] == 0.5 and a["f/cm"] == pytest.approx(2.0)
    assert "f/lnd_conflict_heldout" not in aggregate(items, lpc, lpd)  # without lengths: as before


def test_a_battery_scores_every_family_it_holds_registered_or_not(reference_battery, tmp_path):
    cfg = RunConfig(probes={"battery": reference_battery})
    fams = {it.family for it in read_battery(reference_battery)}
    assert set(cfg.probes.families) == fams and len(fams) == 15
    assert {it.family for it in battery_for(cfg)} == fams
    own = write_battery([_item(0, "a", " b", " c", family="not_a_rule")], tmp_path / "own.jsonl")
    assert "not_a_rule" not in RULES and RunConfig(probes={"battery": str(own)}).probes.families == ("not_a_rule",)
    sub = RunConfig(probes={"battery": reference_battery, "families": ["det_an_choice"]})
    assert {it.family for it in battery_for(sub)} == {"det_an_choice"}
    wrong = RunConfig(probes={"battery": reference_battery, "families": ["det_an_choice", "nope"]})
    with pytest.raises(ValueError, match=r"probes.families: \['nope'\] not in the battery"):
        battery_for(wrong)
    with pytest.raises(ValueError, match="unknown rule family 'not_a_rule'"):
        RunConfig(probes={"families": ["not_a_rule"]})  # generated items need a rule
    with pytest.raises(ValueError, match="does not exist"):
        RunConfig(probes={"battery": str(tmp_path / "missing.jsonl")})
    # config.json round-trips without reading the battery again (families are recorded)
    again = RunConfig.model_validate_json(cfg.model_dump_json().replace(reference_battery, "/gone.jsonl"))
    assert again.probes.families == cfg.probes.families


def test_a_family_named_like_a_store_group_is_refused(tmp_path):
    p = write_battery([_item(0, "a", " b", " c", family="train")], tmp_path / "b.jsonl")
    with pytest.raises(ValueError, match="family name: 'train' cannot name a store group"):
        battery_for(RunConfig(probes={"battery": str(p)}))
    with pytest.raises(ValueError, match="cannot name a store group"):
        battery_info(p, name="rescore")


def test_max_unknown_at_its_default_leaves_the_run_id_unchanged():
    cfg = RunConfig()
    hashed = _omit_defaults(cfg, cfg.model_dump(mode="json"))
    assert "max_unknown" not in hashed["probes"] and "n_per_cell" in hashed["probes"]
    raised = RunConfig(probes={"max_unknown": 1.0})
    assert _omit_defaults(raised, raised.model_dump(mode="json"))["probes"]["max_unknown"] == 1.0
    assert raised.run_id != cfg.run_id and config_hash(cfg) == config_hash(RunConfig(probes={"max_unknown": 0.5}))


def test_the_start_token_is_the_one_training_used():
    tok = world_tokenizer()
    bos = tok.token_to_id("<bos>")
    assert training_bos(tok, np.array([[bos, 5, 6], [bos, 7, 0]])) == bos  # built-in rows start with it
    assert training_bos(tok, np.array([[5, 6, 7]])) is None  # never seen in training: none
    assert training_bos(tok, np.array([[bos, 5]]), {"bos_id": None}) is None  # the manifest decides
    assert stored_bos({"bos_id": None}, tok) is None and stored_bos({"bos_id": 1}, tok) == 1
    assert stored_bos({}, tok) == bos  # a store from before it was recorded: what training prepended then


def _scored_store(path, group, items, battery, seed=0):
    tok = world_tokenizer()
    enc = encode_battery(items, tok, None, n_ctx=64)
    st = RunStore(path, group)
    init_scores(st, enc, {"run_id": "r", **score_attrs(enc, battery)})
    rng = np.random.default_rng(seed)
    for step in (0, 10):
        lpc, lpd = rng.normal(size=enc.n), rng.normal(size=enc.n)
        st.append(step, 1.0, 1e-3, items, lpc, lpd, aggregate(items, lpc, lpd, enc.n_correct, enc.n_distractor))
    st.mark_complete()
    return st


def test_battery_view_reads_the_rescore_group_and_writes_its_own_summary(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"run_id": "r"}))
    (run / "config.json").write_text(RunConfig().model_dump_json())
    items = RULES.get("pronoun_gender").battery(4, 2)
    trained = battery_info(write_battery(items, tmp_path / "train_b.jsonl"))
    _scored_store(run / "store.zarr", "", items, trained)
    other = [_item(i, "Sue cried because", " she", " he", family="g", condition=c, split=s)
             for i, (c, s) in enumerate([(c, s) for c in ("conflict", "agree") for s in ("train", "heldout")] * 2)]
    ood = battery_info(write_battery(other, tmp_path / "ood.jsonl"))
    _scored_store(*RunDir(run).rescore_location("ood"), other, ood)
    rd = RunDir(run)
    assert rd.store_location() == (run / "store.zarr", "")
    with battery_view("ood"):
        assert rd.store_location() == (run / "store.zarr", "rescore/ood")
        assert rd.open_store().families() == ["g"]
        assert rd.summary == run / "rescore" / "ood" / "summary.json"
        st = rd.open_store()
        assert st.series("g/lnd_conflict_heldout").shape == (2,) and st.attrs["battery"]["name"] == "ood"
        assert st.item_labels("g", "n_tokens_correct").tolist() == [1] * 8
    with battery_view("train_b"):  # the battery the run trained with: the training-time group
        assert rd.store_location() == (run / "store.zarr", "") and rd.summary == run / "summary.json"
    with battery_view("nope"), pytest.raises(FileNotFoundError, match="no scores of battery 'nope'.*ungrok rescore"):
        rd.open_store()
    # a group laid out for one file refuses another file under the same name
    changed = battery_info(write_battery(other[:2], tmp_path / "x" / "ood.jsonl"))
    with pytest.raises(ValueError, match="the file changed or another battery has its name"):
        _scored_store(*RunDir(run).rescore_location("ood"), other[:2], changed)


def test_train_refuses_rvp4_on_the_builtin_world_before_anything_is_written(reference_battery, tmp_path, capsys):
    from cluster.cli import main

    out = tmp_path / "out"
    assert main(["train", "--battery", reference_battery, "--out", str(out), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "2,955 of 3,156 items hold words outside the tokenizer's vocabulary" in err and "--max-unknown 1" in err
    assert not out.exists()


def test_a_sweep_with_a_mostly_unknown_battery_is_refused_before_it_starts(reference_battery, tmp_path):
    from cluster.sweep_plan import plan_sweep
    from runner.grid import GridError
    from tests.helpers import tiny_grid_spec

    spec = tiny_grid_spec(tmp_path / "g.toml", probes_extra=f'battery = "{reference_battery}"')
    with pytest.raises(GridError, match=r"\[probes\]: probes.battery: 2,955 of 3,156 items"):
        plan_sweep(spec, tmp_path / "sw")
    assert not (tmp_path / "sw").exists()
