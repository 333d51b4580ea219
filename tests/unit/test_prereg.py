import json
import time
from pathlib import Path

import pytest

from runner.analysis.prereg import (
    PreregError,
    amend,
    load_locked,
    lock,
    lock_path,
    parse,
    verify,
)
from runner.analysis.quarantine import log_unseal

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prereg.toml"


@pytest.fixture
def prereg(tmp_path):
    p = tmp_path / "prereg.toml"
    p.write_text(EXAMPLE.read_text())
    return p


def test_example_parses():
    pr = parse(EXAMPLE)
    assert [p.id for p in pr.predictions] == ["P1", "P2", "P3"]
    assert pr.quarantined_seeds == {1042, 1043, 1044}


def test_lock_records_hash_time_version(prereg):
    rec = lock(prereg)
    assert len(rec["sha256"]) == 64 and rec["locked_utc"].endswith("+00:00") and rec["ungrok_version"]
    assert json.loads(lock_path(prereg).read_text()) == rec
    with pytest.raises(PreregError, match="already locked"):
        lock(prereg)


def test_unlocked_prereg_is_refused(prereg):
    with pytest.raises(PreregError, match="not locked; run `ungrok prereg lock"):
        load_locked(prereg)


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("displaced = 0.6", "displaced = 0.7"),
    lambda t: t.replace("# the paper", "# The paper"),  # one character in a comment
    lambda t: t + "x",
])
def test_one_character_edit_is_refused_naming_file_and_fix(prereg, edit):
    lock(prereg)
    prereg.write_text(edit(prereg.read_text()))
    with pytest.raises(PreregError) as e:
        load_locked(prereg)
    msg = str(e.value)
    assert str(prereg) in msg and "edited after it was locked" in msg and "ungrok prereg amend" in msg


def test_whitespace_normalisation_is_not_an_edit(prereg):
    lock(prereg)
    prereg.write_text(prereg.read_text().replace("\n", "  \r\n"))
    verify(prereg)


def test_amendment_chain_and_forward_only(prereg):
    lock(prereg)
    before = load_locked(prereg).record["locked_utc"]
    time.sleep(0.01)
    amend(prereg, {"classifier.displaced": 0.55}, "tighter")
    locked = load_locked(prereg)
    a_utc = locked.record["amendments"][0]["utc"]
    assert locked.classifier_at(before).displaced == 0.6  # data produced before the amendment
    later = a_utc.replace(a_utc[:4], str(int(a_utc[:4]) + 1))
    assert locked.classifier_at(later).displaced == 0.55  # data produced after it
    # tampering with the chain is detected
    rec = json.loads(lock_path(prereg).read_text())
    rec["amendments"][0]["changes"]["classifier.displaced"] = 0.5
    lock_path(prereg).write_text(json.dumps(rec))
    with pytest.raises(PreregError, match="does not chain"):
        load_locked(prereg)


@pytest.mark.parametrize("changes,msg", [({"predictions.P1": 1}, "only classifier"),
                                         ({"classifier.nope": 1}, "only classifier"),
                                         ({}, "changes a constant .* or adds predictions"),
                                         ({"classifier.displaced": "x"}, "must be a number")])
def test_bad_amendments(prereg, changes, msg):
    lock(prereg)
    with pytest.raises(PreregError, match=msg):
        amend(prereg, changes, "why")


def test_exploratory_vs_confirmatory(prereg):
    lock(prereg)
    locked = load_locked(prereg)
    assert locked.status("2000-01-01T00:00:00+00:00") == "exploratory"
    assert locked.status("2999-01-01T00:00:00+00:00") == "confirmatory"
    assert locked.status(None) == "exploratory"


def test_unseal_is_logged(prereg):
    lock(prereg)
    log_unseal(load_locked(prereg), "verdict", {"run-a": 1042}, "final read")
    rec = json.loads(Path(str(prereg) + ".unseal.jsonl").read_text().splitlines()[0])
    assert rec["what"] == ["run-a"] and rec["seeds"] == [1042] and rec["utc"] and rec["reason"] == "final read"


def test_malformed_prereg_names_field(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[[predictions]]\nid="P"\nfamily="f"\nquantity="final"\nop="~"\nvalue=1\n')
    with pytest.raises(PreregError, match="predictions.0.op"):
        parse(p)
    p.write_text('[classifier]\nwindo = 3\n')
    with pytest.raises(PreregError, match="unknown classifier constant 'windo'"):
        parse(p)
