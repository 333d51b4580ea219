"""Quarantined seeds: refused by every command that touches them until a logged --unseal, whose
record (who, when, why) is hash-chained beside the prereg and shown in the report."""

import json
from pathlib import Path

import pytest

from cluster.cli import main as cli_main
from runner.analysis.prereg import PreregError, load_locked, lock, unseal_log_path
from runner.analysis.quarantine import refuse_quarantined
from tests.helpers import tiny_grid_spec
from tests.unit.fake_runs import make_run, rise_then

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prereg.toml"


@pytest.fixture
def prereg(tmp_path, monkeypatch):
    monkeypatch.delenv("UNGROK_PREREG", raising=False)
    p = tmp_path / "prereg.toml"
    p.write_text(EXAMPLE.read_text().replace("seeds = [1042, 1043, 1044]", "seeds = [9]"))
    lock(p)
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs (hand-made trajectories): seed 7, and seed 9, which the prereg quarantines."""
    root = tmp_path_factory.mktemp("q") / "runs"
    make_run(root, "open", rise_then(0.2), seed=7)
    make_run(root, "sealed", rise_then(0.2), seed=9)
    return root


def _log(prereg) -> list[dict]:
    path = unseal_log_path(prereg)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_refuse_quarantined(prereg):
    locked = load_locked(prereg)
    assert refuse_quarantined(None, {"x": 9}, None, "train") is None  # no prereg known: nothing sealed
    assert refuse_quarantined(locked, {"x": 7, "y": None}, None, "train") is None and _log(prereg) == []
    with pytest.raises(PreregError) as e:
        refuse_quarantined(locked, {"run-a": 9, "run-b": 7}, None, "show")
    msg = str(e.value)
    assert "show: run-a use quarantined seed(s) [9]" in msg and str(prereg) in msg and "--unseal REASON" in msg
    with pytest.raises(PreregError, match="needs a reason"):
        refuse_quarantined(locked, {"run-a": 9}, "  ", "show")
    rec = refuse_quarantined(locked, {"run-a": 9}, "final read", "show")
    assert rec is not None and rec["seeds"] == [9] and rec["what"] == ["run-a"] and rec["command"] == "show"
    assert rec["reason"] == "final read" and rec["user"] and rec["utc"] and rec["prev"] == locked.record["sha256"]
    rec2 = refuse_quarantined(load_locked(prereg), {"c": 9}, "again", "status")
    assert rec2 is not None and rec2["prev"] == rec["hash"] and rec2["n"] == 2
    assert [u["n"] for u in load_locked(prereg).unseals] == [1, 2]


def test_edited_unseal_log_is_refused(prereg):
    refuse_quarantined(load_locked(prereg), {"run-a": 9}, "final read", "verdict")
    log = unseal_log_path(prereg)
    log.write_text(log.read_text().replace("final read", "a peek"))
    with pytest.raises(PreregError, match="unseal record 1 does not chain"):
        load_locked(prereg)
    log.write_text("")  # a deleted record is caught too: the chain must start at the lock
    load_locked(prereg)


def _refused(capsys, argv, *needles) -> str:
    assert cli_main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "quarantined seed(s) [9]" in err and "--unseal REASON" in err
    for n in needles:
        assert n in err
    return err


def test_train_refuses_a_quarantined_seed_before_anything_starts(prereg, tmp_path, capsys):
    out = tmp_path / "out"
    _refused(capsys, ["train", "--seed", "9", "--out", str(out), "--prereg", str(prereg)], "train:")
    assert not out.exists()


def test_sweep_and_submit_refuse_a_grid_with_a_quarantined_seed(prereg, tmp_path, capsys):
    spec = tiny_grid_spec(tmp_path / "g.toml", seeds=(7, 9))
    out = tmp_path / "sw"
    _refused(capsys, ["sweep", str(spec), "--out", str(out), "--prereg", str(prereg)], "sweep:", "web/packed/none/s9")
    assert not out.exists()
    _refused(capsys, ["submit", str(spec), "--address", "http://127.0.0.1:1", "--out", str(out),
                      "--prereg", str(prereg)], "submit:")


def test_status_refuses_a_sweep_with_a_quarantined_seed(prereg, tmp_path, capsys, monkeypatch):
    sw = tmp_path / "sw"
    sw.mkdir()
    tiny_grid_spec(sw / "grid.toml", seeds=(9,))
    monkeypatch.setenv("UNGROK_PREREG", str(prereg))  # the project-level default
    _refused(capsys, ["status", str(sw)], "status:")


def test_show_refuses_until_unsealed_and_logs_the_unseal(prereg, runs, capsys, monkeypatch):
    _refused(capsys, ["show", str(runs / "sealed"), "--prereg", str(prereg)], "show: sealed")
    assert not (runs / "sealed" / "summary.json").exists()  # nothing scored or written
    monkeypatch.setenv("UNGROK_PREREG", str(prereg))
    _refused(capsys, ["show", str(runs / "sealed")])
    assert cli_main(["show", str(runs / "open"), "--json"]) == 0  # other seeds are not touched
    assert cli_main(["show", str(runs / "sealed"), "--json", "--unseal", "replication read"]) == 0
    (rec,) = _log(prereg)
    assert rec["command"] == "show" and rec["what"] == ["sealed"] and rec["reason"] == "replication read"
    assert cli_main(["show", str(runs / "sealed"), "--json"]) == 2  # an unseal is one read, not a key


def test_rescore_refuses_a_quarantined_run(prereg, runs, tmp_path, capsys):
    battery = tmp_path / "b.jsonl"
    battery.write_text("")
    _refused(capsys, ["rescore", str(runs / "sealed"), "--battery", str(battery), "--prereg", str(prereg)],
             "rescore: sealed")
    assert not (runs / "sealed" / "rescore").exists()


def test_unseal_without_a_prereg_is_refused(runs, capsys, monkeypatch):
    monkeypatch.delenv("UNGROK_PREREG", raising=False)
    assert cli_main(["show", str(runs / "sealed"), "--unseal", "why"]) == 2
    assert "--unseal needs the prereg" in capsys.readouterr().err


def test_verdict_and_report_refuse_until_unsealed(prereg, runs, tmp_path, capsys):
    _refused(capsys, ["verdict", str(runs), "--prereg", str(prereg)], "verdict: sealed")
    assert not (runs / "verdict.json").exists()
    _refused(capsys, ["report", str(runs), "--prereg", str(prereg), "--out", str(tmp_path / "rep")], "report:")
    assert not (tmp_path / "rep").exists()
    assert cli_main(["verdict", str(runs), "--prereg", str(prereg), "--unseal", "the single final read"]) == 0
    v = json.loads((runs / "verdict.json").read_text())
    assert v["unsealed"]["reason"] == "the single final read" and v["unsealed"]["command"] == "verdict"
    assert {r["seed"]: r["sealed"] for r in v["runs"]} == {7: False, 9: False}
    assert "unsealed" in capsys.readouterr().out
    assert cli_main(["report", str(runs), "--prereg", str(prereg), "--unseal", "figures for the paper",
                     "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Quarantine unsealed" in page and "the single final read" in page and "figures for the paper" in page
    assert [r["command"] for r in _log(prereg)] == ["verdict", "report"]
