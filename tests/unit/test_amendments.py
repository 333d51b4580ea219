"""Additive amendments: an amendment may register new dated predictions, scored only on data first
scored after it, and shown as such; the locked examples keep verifying."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from cluster.cli import main as cli_main
from cluster.cli_analysis import scoreboard_table
from runner.analysis.prereg import PreregError, amend, load_locked, lock, lock_path
from runner.analysis.scoreboard import scoreboard

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NEW = {"id": "N1", "text": "added later", "family": "pronoun_gender", "select": {"corpus": "web"},
       "quantity": "final", "op": "<=", "value": 0.6, "seeds": "1/1"}
DOSE = {"id": "D9", "family": "pronoun_gender", "intervention": "kill", "corpus": "stories", "quantity": "rho_final",
        "op": "<", "value": 0}


@pytest.fixture
def locked_file(tmp_path):
    p = tmp_path / "prereg.toml"
    p.write_text((EXAMPLES / "prereg.toml").read_text())
    lock(p)
    return p


@pytest.mark.parametrize("name", ["prereg_tour.toml", "prereg_interventions.toml"])
def test_committed_example_locks_still_verify(name):
    locked = load_locked(EXAMPLES / name)
    assert locked.record["sha256"] and all(reg["by"] == "lock" for _, reg in locked.registered("predictions"))


def test_amendment_registers_dated_predictions(locked_file):
    rec = amend(locked_file, {}, "a new claim", add={"predictions": [NEW], "dose_predictions": [DOSE]})
    a = rec["amendments"][0]
    assert a["changes"] == {} and a["add"]["predictions"][0]["id"] == "N1"
    locked = load_locked(locked_file)  # the chain (with the additions hashed in) verifies
    preds = locked.registered("predictions")
    assert [p.id for p, _ in preds] == ["P1", "P2", "P3", "N1"]
    assert preds[-1][1] == {"by": "amendment 1", "amendment": 1, "utc": a["utc"]}
    assert [p.id for p, _ in locked.registered("dose_predictions")] == ["D9"]
    # editing the registered addition breaks the chain
    doc = json.loads(lock_path(locked_file).read_text())
    doc["amendments"][0]["add"]["predictions"][0]["value"] = 0.9
    lock_path(locked_file).write_text(json.dumps(doc))
    with pytest.raises(PreregError, match="amendment 1 does not chain"):
        load_locked(locked_file)


@pytest.mark.parametrize("add,msg", [({"predictions": [{**NEW, "id": "P1"}]}, "'P1' is already registered"),
                                     ({"falsifiers": [NEW, NEW]}, "'N1' is already registered"),
                                     ({"predictions": [{**NEW, "op": "~"}]}, "predictions.0.op"),
                                     ({"nope": []}, "nope")])
def test_bad_additions_are_refused_naming_the_field(locked_file, add, msg):
    with pytest.raises(PreregError, match=msg):
        amend(locked_file, {}, "why", add=add)
    assert json.loads(lock_path(locked_file).read_text())["amendments"] == []


def _run(name, first_scored, final=0.1):
    return {"run": name, "corpus": "web", "budget": "packed", "seed": 1, "dose": "none", "window": "",
            "sealed": False, "status": "confirmatory", "complete": True, "first_scored_utc": first_scored,
            "families": {"pronoun_gender": {"label": "DISPLACED", "final": final, "control_valid": True,
                                            "margin_valid": True, "abs_cross_lag": 10}}}


def test_added_prediction_applies_to_data_first_scored_after_it(locked_file):
    amend(locked_file, {}, "a new claim", add={"predictions": [NEW]})
    locked = load_locked(locked_file)
    utc = locked.record["amendments"][0]["utc"]
    before, after = "2000-01-01T00:00:00+00:00", "2999-01-01T00:00:00+00:00"
    sb = scoreboard(locked, [_run("old", before)], {"groups": []})
    n1 = sb["predictions"][-1]
    assert n1["id"] == "N1" and n1["result"] == "VOID" and n1["void"]["gate"] == "amendment"
    assert n1["registered"]["by"] == "amendment 1" and n1["before_registration"] == ["old"] and utc in n1["why"]
    # the locked P1 (2/3 seeds) still reads the old run, as exploratory data would be
    assert sb["predictions"][0]["registered"] == {"by": "lock", "utc": locked.locked_utc}
    sb = scoreboard(locked, [_run("old", before, final=0.9), _run("new", after)], {"groups": []})
    n1 = sb["predictions"][-1]
    assert n1["result"] == "PASS" and n1["runs"] == ["new"] and n1["before_registration"] == ["old"]


def test_amend_cli_adds_predictions_and_the_scoreboard_says_so(locked_file, tmp_path, capsys):
    add = tmp_path / "add.toml"
    add.write_text('[[predictions]]\nid = "N2"\nfamily = "pronoun_gender"\nquantity = "final"\nop = "<="\n'
                   'value = 0.6\nseeds = "1/1"\n')
    assert cli_main(["prereg", "amend", str(locked_file), "--add", str(add), "--reason", "new claim"]) == 0
    assert "adds N2" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[predictions]]\nid = "N3"\n')
    assert cli_main(["prereg", "amend", str(locked_file), "--add", str(bad), "--reason", "x"]) == 2
    assert "predictions.0" in capsys.readouterr().err
    v = scoreboard(load_locked(locked_file), [_run("new", "2999-01-01T00:00:00+00:00")], {"groups": []})
    con = Console(width=250, record=True)
    con.print(scoreboard_table(v))
    text = con.export_text()
    assert "amendment 1 (" in text and "N2" in text
