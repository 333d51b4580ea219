"""`ungrok demo` through the same code as the real tour, on a tiny tour: real local Ray, real
DeepSpeed runs, a kill dose, a prereg locked in the test; plus the shipped tour's own files."""

import json
import shutil
from pathlib import Path

import pytest

from cluster.cli import main as cli_main
from cluster.demo import TOUR_GRID, TOUR_PREREG, run_demo
from runner.analysis.prereg import PreregError, load_locked, lock
from runner.config import RunConfig
from runner.grid import load_grid
from tests.helpers import tiny_grid_spec


def _tiny(tmp_path: Path) -> tuple[Path, Path]:
    corpora = ('[{name = "web-adjacent", doses = ["none"]}, '
               '{name = "stories-adjacent", doses = ["none", "kill:1.0"]}]')
    grid = tiny_grid_spec(tmp_path / "tinytour.toml", name="tinytour", seeds=(3,), corpora=corpora,
                          probes_extra='families = ["pronoun_gender_adjacent", "number_agreement"]')
    prereg = tmp_path / "prereg.toml"
    shutil.copy(TOUR_PREREG, prereg)
    lock(prereg)
    return grid, prereg


def test_shipped_tour_is_locked_and_expands_to_the_four_cells():
    assert load_locked(TOUR_PREREG).record["sha256"]  # verifies against the committed lock
    import interventions  # noqa: F401  (registers kill / rescue)

    cells = load_grid(TOUR_GRID).cells()
    assert sorted((c.corpus, c.dose) for c in cells) == [
        ("stories-adjacent", "kill:1.0"), ("stories-adjacent", "none"), ("web-adjacent", "none"),
        ("web-adjacent", "rescue:3")]
    # the demo grid's model: twice the default width, its attention fused (runner.attention), nothing
    # else changed; the tuned world's pronoun family; 2,500 steps (the grid: 3,000), the lr decayed by a
    # cosine over them
    wide = {"d_model": 128, "d_mlp": 512, "attention": "sdpa"}
    assert {c.config.model for c in cells} == {RunConfig().model.model_copy(update=wide)}
    assert {c.config.probes.families for c in cells} == {("pronoun_gender_adjacent", "number_agreement")}
    assert {c.config.optim for c in cells} == {RunConfig().optim.model_copy(update={"warmdown_frac": 1.0})}
    assert {c.config.train.steps for c in cells} == {2500}


def test_demo_refuses_an_unverified_prereg_before_anything_runs(tmp_path):
    grid, prereg = _tiny(tmp_path)
    prereg.write_text(prereg.read_text().replace("value = 0.6", "value = 0.7", 1))  # edited after the lock
    with pytest.raises(PreregError):
        run_demo(tmp_path / "demo", grid=grid, prereg=prereg, progress=False, log=lambda *_: None)
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_tiny_tour_end_to_end_and_rerun_skips(tmp_path, local_ray, capsys, monkeypatch):
    grid, prereg = _tiny(tmp_path)
    monkeypatch.delenv("UNGROK_PROGRESS", raising=False)  # auto: stdout is captured, not a terminal
    r = run_demo(tmp_path / "demo", grid=grid, prereg=prereg, progress=True, log=print)
    assert r["sweep"].ran == 3 and not r["sweep"].failed
    _assert_progress_lines(capsys.readouterr().out, r["sweep"])
    corpus = sorted((tmp_path / "demo" / "sweep" / "corpora").glob("*/manifest.json"))[0].parent
    assert cli_main(["audit", str(corpus), "--rules", "pronoun_gender_adjacent"]) == 0  # piped: plain lines, no bar
    audit = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"progress: audit {corpus}: ")]
    assert audit and "(100%)" in audit[-1], audit
    assert r["report"].exists() and (r["report"].parent / "dose_response.png").exists()
    v = json.loads(r["verdict_json"].read_text())
    scored = {p["id"]: p for p in v["predictions"] + v["falsifiers"]}
    assert set(scored) == {"S1", "S2", "K1", "R1", "FR"}
    # the runs were scored after the lock, so every decided prediction is confirmatory; 40 steps
    # may leave the controls invalid, in which case the prediction is VOID and says so
    for pid in ("S1", "S2", "K1"):
        p = scored[pid]
        assert p["status"] == "confirmatory", p
        assert p["result"] in {"PASS", "FAIL"} or (
            p["result"] == "VOID" and p["void"]["gate"] in {"control", "margin"}
            and p["why"].startswith(p["void"]["gate"])), p
    assert scored["R1"]["result"] == "VOID" and "no run" in scored["R1"]["why"]  # no rescue cell here
    man = json.loads((tmp_path / "demo" / "sweep" / "manifest.json").read_text())
    assert man["last_run"]["ran"] == 3
    again = run_demo(tmp_path / "demo", grid=grid, prereg=prereg, progress=False, log=lambda *_: None)
    assert len(again["sweep"].skipped) == 3 and again["sweep"].ran == 0


def _assert_progress_lines(out: str, res) -> None:
    """Piped, the demo says what it does: stream builds start and end, and every cell has a
    submitted line and a finished line with its steps and wall time (docs/quickstart.md)."""
    lines = out.splitlines()
    assert any("building" in ln and "stream(s) before training" in ln for ln in lines), out
    assert any(ln.startswith("progress: stream 1/") and ln.endswith("since the builds began)") for ln in lines), out
    cells = [ln for ln in lines if ln.startswith("progress: cell ")]
    assert sum("submitted" in ln for ln in cells) == 3, out
    done = [ln for ln in cells if "40/40 (100%)" in ln and "done in" in ln and "complete" in ln]
    assert len(done) == 3, out
    assert "\x1b[" not in out  # no terminal control codes in a log


def test_cli_demo_reports_a_broken_lock_as_a_user_error(tmp_path, monkeypatch, capsys):
    import cluster.demo as demo

    _, prereg = _tiny(tmp_path)
    prereg.write_text(prereg.read_text() + "\n# edited after the lock\n")
    monkeypatch.setattr(demo, "TOUR_PREREG", prereg)
    assert cli_main(["demo", "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    assert "prereg" in capsys.readouterr().err.lower()
    assert not (tmp_path / "d").exists()
