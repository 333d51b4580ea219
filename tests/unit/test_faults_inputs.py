"""Inputs that used to give wrong results with no warning (issue 20, items 5 and 7): each is now
refused before anything runs, or warned about."""

import json

import pytest

from cluster.cli import main as cli_main
from cluster.cli_checks import short_run
from runner.train import prepare_run
from runner.world.batteries import BatteryError, read_battery
from tests.helpers import tiny_grid_spec, tiny_run_config

ITEM = {"family": "fam_x", "condition": "conflict", "probe": "p", "split": "heldout", "template_id": "t",
        "prefix": "the girl said", "correct": " she", "distractor": " he", "item_id": "i0"}


def _battery(tmp_path, items) -> str:
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps({**ITEM, **it, "item_id": f"i{n}"}) + "\n" for n, it in enumerate(items)))
    return str(path)


def test_battery_without_heldout_agree_items_is_refused_before_training(tmp_path, capsys):
    path = _battery(tmp_path, [{}, {"split": "train", "condition": "agree"}])
    cfg = tiny_run_config(probes={"battery": path, "families": ("fam_x",)})
    with pytest.raises(BatteryError, match="family 'fam_x' has no heldout agree items"):
        prepare_run(cfg, tmp_path / "out")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    assert cli_main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "no heldout agree items" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_condition_is_refused_naming_the_line(tmp_path):
    path = _battery(tmp_path, [{}, {"condition": "agreee"}])
    with pytest.raises(BatteryError, match=r"b.jsonl:2: field 'condition': .*agreee"):
        read_battery(path)


def test_a_run_too_short_for_the_classifier_is_warned_about():
    assert short_run(tiny_run_config(train={"steps": 120}, schedule={"every": 20})) is not None
    msg = short_run(tiny_run_config(train={"steps": 60}))
    assert msg is not None and "INCOMPLETE" in msg and "train.steps 60" in msg
    assert short_run(tiny_run_config(train={"steps": 200}, schedule={"every": 20}, corpus={"n_stories": 4000})) is None


def test_reuse_typo_is_refused_before_anything_starts(tmp_path, capsys):
    spec = tiny_grid_spec(tmp_path / "g.toml")
    rc = cli_main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--reuse", str(tmp_path / "swepe")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "--reuse" in err and "not a sweep folder" in err and "warning" in err
    assert not (tmp_path / "sw").exists()


def test_submit_quotes_out_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """``--out 'x;touch FILE;echo'`` used to run ``touch`` on the cluster; a path with a space
    failed the job. The entrypoint now holds it as one shell word; the job folder is removed."""
    import shlex
    import tempfile

    import ray.job_submission as js

    import cluster.ray_setup as rs

    seen = {}

    class FakeClient:
        def __init__(self, address):
            pass

        def submit_job(self, entrypoint, runtime_env):
            seen["entry"], seen["wd"] = entrypoint, runtime_env["working_dir"]
            return "raysubmit_1"

    monkeypatch.setattr(rs, "check_reachable", lambda *a, **k: None)
    monkeypatch.setattr(js, "JobSubmissionClient", FakeClient)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spec = tiny_grid_spec(tmp_path / "g.toml")
    out = tmp_path / "a b;touch PWNED;echo"
    job, status = rs.submit(spec, "http://head:8265", out, follow=False, log=lambda *_: None)
    assert (job, status) == ("raysubmit_1", "SUBMITTED")
    words = shlex.split(seen["entry"])
    assert words[words.index("--out") + 1] == str(out.resolve()) and "touch" not in words
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("ungrok-job-")]
