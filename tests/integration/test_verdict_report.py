"""Verdicts and the report on real (tiny) runs, with a real lock, and the page in real Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.cli import main as cli_main
from runner.analysis.prereg import PreregError, load_locked, lock
from runner.analysis.verdicts import find_runs, run_seeds, verdict
from runner.train import train_run
from tests.helpers import tiny_run_config

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prereg.toml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs: seed 7 trained before the lock, seed 8 after; seed 9 is quarantined."""
    root = tmp_path_factory.mktemp("runs")
    prereg = root / "prereg.toml"
    prereg.write_text(EXAMPLE.read_text().replace("seeds = [1042, 1043, 1044]", "seeds = [9]"))
    kw = dict(schedule={"every": 20}, corpus={"n_stories": 3200})
    train_run(tiny_run_config(train={"steps": 200, "seed": 7}, **kw), root / "runs", progress=False)
    lock(prereg)
    for seed in (8, 9):
        train_run(tiny_run_config(train={"steps": 200, "seed": seed}, **kw), root / "runs", progress=False)
    return root / "runs", prereg


def _open(path):
    """The runs of the seeds the prereg does not quarantine (7 and 8)."""
    return [path / name for name, seed in run_seeds(find_runs(path)).items() if seed != 9]


def test_exploratory_confirmatory_and_quarantine(runs):
    path, prereg = runs
    with pytest.raises(PreregError, match=r"quarantined seed\(s\) \[9\]"):
        verdict(path, load_locked(prereg))
    v = verdict(_open(path), load_locked(prereg))
    by_seed = {r["seed"]: r for r in v["runs"]}
    assert by_seed[7]["status"] == "exploratory" and by_seed[8]["status"] == "confirmatory" and 9 not in by_seed
    fig = by_seed[8]["families"]["pronoun_gender"]
    assert len(fig["final_ci"]) == 2 and fig["final_ci"][0] <= fig["final"] <= fig["final_ci"][1]
    assert fig["n_boot"] == 2000
    assert {p["result"] for p in v["predictions"]} <= {"PASS", "FAIL", "VOID"}
    # CIs are reproducible (seeded by run id)
    again = verdict(_open(path), load_locked(prereg))
    assert again["runs"][1]["families"] == v["runs"][1]["families"]
    # unsealing reads the quarantined seed and is logged
    log = Path(str(prereg) + ".unseal.jsonl")
    n = log.read_text().count("\n") if log.exists() else 0
    u = verdict(path, load_locked(prereg), unseal="final read")
    assert not {r["seed"]: r for r in u["runs"]}[9]["sealed"] and u["unsealed"]["reason"] == "final read"
    assert log.read_text().count("\n") == n + 1


def test_every_evaluator_refuses_an_edited_prereg(runs, tmp_path, capsys):
    path, prereg = runs
    edited = tmp_path / "p.toml"
    edited.write_text(prereg.read_text())
    shutil.copy(str(prereg) + ".lock.json", str(edited) + ".lock.json")
    edited.write_text(edited.read_text().replace("value = 0.6", "value = 0.7", 1))
    for cmd in (["verdict", str(path), "--prereg", str(edited)], ["report", str(path), "--prereg", str(edited)],
                ["prereg", "verify", str(edited)]):
        assert cli_main(cmd) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "edited after it was locked" in err and str(edited) in err


def test_verdict_cli_writes_json(runs, capsys):
    path, prereg = runs
    assert cli_main(["verdict", str(path), "--prereg", str(prereg), "--unseal", "test"]) == 0
    v = json.loads((path / "verdict.json").read_text())
    assert v["prereg"]["sha256"] and len(v["runs"]) == 3
    assert "scoreboard" in capsys.readouterr().out


def test_amendment_visible_in_report(runs, tmp_path):
    path, prereg = runs
    p2 = tmp_path / "p.toml"
    p2.write_text(prereg.read_text())
    shutil.copy(str(prereg) + ".lock.json", str(p2) + ".lock.json")
    assert cli_main(["prereg", "amend", str(p2), "--set", "classifier.displaced=0.55", "--reason", "tighter band"]) == 0
    assert cli_main(["report", str(path), "--prereg", str(p2), "--unseal", "test", "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "tighter band" in page and "Amendments" in page


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_images_in_headless_chromium(runs, tmp_path):
    path, prereg = runs
    assert cli_main(["report", str(path), "--prereg", str(prereg), "--unseal", "test",
                     "--out", str(tmp_path / "rep")]) == 0
    page = tmp_path / "rep" / "index.html"
    html = page.read_text()
    n_img = html.count("<img")
    assert n_img >= 3 and "Phase table" in html and "Scoreboard" in html
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine: `apt-get install chromium` (.ci/run installs it)")
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    m = re.search(r'data-images-ok="(\d+)/(\d+)"', out.stdout)
    assert m, out.stderr[-2000:]
    assert m.group(1) == m.group(2) == str(n_img)
