"""Fault injection (issue 20): real processes killed with SIGKILL at a random step, a full disk
(an injected ENOSPC) mid-build and mid-run, two trainers on one folder, a dead Ray address, and
the sockets a local Ray and a trainer listen on. Every run is the same tiny cell (3 checkpoint
intervals of 20 steps), trained once uninterrupted (module fixture) as the reference that a
faulted-then-rerun run must equal bit for bit."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.cli import main as cli_main
from runner.grid import load_grid
from runner.model import load_model
from runner.store import RunStore
from runner.train import train_run
from tests.helpers import tiny_grid_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FAULTS = REPO / "tests" / "faults"  # sitecustomize.py: UNGROK_FAULT_KILL=<step>:<marker>
EVERY, STEPS = 20, 60


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS), str(REPO)]), **extra}
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """The grid spec, its one cell's config (as a file too) and that cell trained uninterrupted."""
    root = tmp_path_factory.mktemp("faults")
    spec = tiny_grid_spec(root / "g.toml", seeds=(3,), steps=STEPS)
    cfg = load_grid(spec).cells()[0].config
    assert cfg.schedule.every == EVERY and cfg.train.steps == STEPS
    (root / "cfg.json").write_text(cfg.model_dump_json())
    ref = train_run(cfg, root / "ref", progress=False, log=lambda *_: None)
    return {"root": root, "spec": spec, "cfg": cfg, "cfg_file": root / "cfg.json", "ref": ref}


def _assert_equal_to_ref(cell, store: RunStore, run_dir: Path) -> None:
    """Every stored series and every saved weight file equal the uninterrupted run's, bit for bit."""
    a = RunStore(cell["ref"] / "store.zarr")
    assert store.attrs["complete"] and list(store.steps()) == list(a.steps()) == list(range(0, STEPS + 1, EVERY))
    keys = ["train/loss", "train/lr", *(f"{f}/{k}" for f in a.families() for k in ("logp_correct", "logp_distractor"))]
    for key in keys:
        np.testing.assert_array_equal(a.series(key), store.series(key), err_msg=key)
    for step in range(0, STEPS + 1, EVERY):
        wa, wb = load_model(cell["ref"], step).state_dict(), load_model(run_dir, step).state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"weights at step {step} differ"


def _train_cli(cell, out: Path, **env) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "cluster.cli", "train", "--config", str(cell["cfg_file"]), "--out", str(out),
            "--no-progress"]
    return subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=400)


def test_train_sigkill_in_each_of_the_first_three_intervals_then_rerun_is_bit_identical(cell, tmp_path, capsys):
    """One run killed four times: inside the step-0 checkpoint (scores stored, no resume state
    yet), then, rerun, at a random step of interval 1 (after the step-0 checkpoint, the case that
    never resumed), then of interval 2, then of interval 3; the last rerun (in-process: the same
    command, without a process start-up) finishes equal to the uninterrupted run."""
    rng = random.Random(20)
    out, run_id = tmp_path / "out", cell["cfg"].run_id
    p = _train_cli(cell, out, UNGROK_FAULT_KILL=f"score:0:{tmp_path / 'killed-score'}")
    assert p.returncode == -signal.SIGKILL and (tmp_path / "killed-score").exists(), p.stdout + p.stderr
    assert RunStore(out / run_id / "store.zarr").n_complete == 1 and not (out / run_id / "checkpoints").exists()
    for k in range(3):
        step = rng.randrange(k * EVERY + 1, (k + 1) * EVERY)
        marker = tmp_path / f"killed-{k}"
        p = _train_cli(cell, out, UNGROK_FAULT_KILL=f"{step}:{marker}")
        assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
        assert marker.exists()
        if k:  # the rerun resumed from the last checkpoint before the previous kill (step 0 included)
            assert f"resumed from step {(k - 1) * EVERY}" in p.stdout, p.stdout + p.stderr
        store = RunStore(out / run_id / "store.zarr")
        assert list(store.steps()) == list(range(0, k * EVERY + 1, EVERY)) and not store.attrs["complete"]
    assert cli_main(["train", "--config", str(cell["cfg_file"]), "--out", str(out), "--no-progress"]) == 0
    assert f"resumed from step {2 * EVERY}" in capsys.readouterr().out
    _assert_equal_to_ref(cell, RunStore(out / run_id / "store.zarr"), out / run_id)


def test_sweep_worker_sigkill_in_first_interval_is_retried_bit_identical(cell, tmp_path):
    """A sweep worker SIGKILLed between the step-0 checkpoint and the next: Ray's retry resumes
    from step 0 and the cell ends equal to the uninterrupted run (before: ValueError on every
    retry and every sweep rerun). The killed process is the cell's fork of the node's warm server
    (cluster.zygote); its Ray task ends itself so that Ray retries it."""
    step = random.Random(21).randrange(1, EVERY)
    marker, sw = tmp_path / "killed", tmp_path / "sw"
    p = subprocess.run([sys.executable, "-m", "cluster.cli", "sweep", str(cell["spec"]), "--out", str(sw),
                        "--num-cpus", "1", "--no-progress"], env=_env(UNGROK_FAULT_KILL=f"{step}:{marker}"),
                       capture_output=True, text=True, timeout=500)
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = cell["cfg"].run_id
    attempts = [json.loads(x) for x in (sw / "runs" / run_id / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and int(marker.read_text()) == attempts[0]["pid"]
    assert [a["start"] for a in attempts] == ["warm fork"] * 2  # the fork died, and its Ray task with it
    _assert_equal_to_ref(cell, RunStore(sw / "store.zarr", f"runs/{run_id}"), sw / "runs" / run_id)


def _enospc(path) -> OSError:
    return OSError(28, "No space left on device", str(path))


def test_disk_full_during_training_then_rerun_after_space_is_freed(cell, tmp_path, monkeypatch, capsys):
    """ENOSPC while saving the step-20 weights (the step-20 scores are already stored): one line,
    exit 1; the rerun resumes from step 0 and ends bit-identical."""
    import runner.train.callbacks as cb

    real = cb.save_weights

    def full_at_20(model, path):
        if "step_0000020" in str(path):
            raise _enospc(path)
        return real(model, path)

    monkeypatch.setattr(cb, "save_weights", full_at_20)
    out = tmp_path / "out"
    args = ["train", "--config", str(cell["cfg_file"]), "--out", str(out), "--no-progress"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "step_0000020" in err and "Traceback" not in err
    assert len([x for x in err.splitlines() if x.startswith("error")]) == 1  # one line (a warning may precede)
    monkeypatch.setattr(cb, "save_weights", real)  # space freed
    assert cli_main(args) == 0
    assert "resumed from step 0" in capsys.readouterr().out
    run = out / cell["cfg"].run_id
    _assert_equal_to_ref(cell, RunStore(run / "store.zarr"), run)


def test_disk_full_during_corpus_build_leaves_nothing_then_rerun_builds(tmp_path, monkeypatch, capsys):
    import datasets

    real = datasets.Dataset.save_to_disk

    def full(self, path, *a, **k):
        raise _enospc(Path(path) / "data-00000-of-00001.arrow")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    out = tmp_path / "corpora"
    args = ["corpus", "build", "--preset", "web", "--n-stories", "2000", "--out", str(out)]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "Traceback" not in err
    assert not out.exists() or not [p for p in out.iterdir()]  # no hidden temporary folder left
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", real)
    assert cli_main(args) == 0
    built = [p for p in out.iterdir()]
    assert len(built) == 1 and (built[0] / "manifest.json").exists() and not built[0].name.startswith(".")


def test_disk_full_during_capture_then_rerun_completes(cell, tmp_path, monkeypatch, capsys):
    import shutil

    import mech.capture as cap

    run = tmp_path / cell["cfg"].run_id
    shutil.copytree(cell["ref"], run)
    real = cap._Staging.write

    def full_at_second(self, i, rows):
        if i == 1:
            raise _enospc(self.root / "c")
        return real(self, i, rows)

    monkeypatch.setattr(cap._Staging, "write", full_at_second)
    args = ["mech", "capture", str(run), "--names", "resid_post"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "Traceback" not in err
    monkeypatch.setattr(cap._Staging, "write", real)
    assert cli_main(args) == 0
    ds = cap.open_capture(run, cell["cfg"].probes.families[0])
    assert ds.sizes["step"] == STEPS // EVERY + 1


def test_second_train_on_the_same_run_folder_refuses_with_the_holders_pid(cell, tmp_path, capsys):
    out = tmp_path / "out"
    marker = tmp_path / "never"  # the holder stops itself late: killed by the test long before
    holder = subprocess.Popen([sys.executable, "-m", "cluster.cli", "train", "--config", str(cell["cfg_file"]),
                               "--out", str(out), "--no-progress"], env=_env(UNGROK_FAULT_KILL=f"59:{marker}"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = out / cell["cfg"].run_id / ".lock"
    try:
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text().split()[:1] == [str(holder.pid)]):
            assert holder.poll() is None and time.time() < deadline
            time.sleep(0.05)
        rc = cli_main(["train", "--config", str(cell["cfg_file"]), "--out", str(out), "--no-progress"])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 3 and f"in use by pid {holder.pid}" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()


def test_dead_address_fails_fast_with_one_line(cell, tmp_path, monkeypatch, capsys):
    """A closed port (sweep, submit) and ``--address auto`` pointing at a dead cluster: exit 1 in
    one line within 15 s, nothing written (before: > 300 s of retries, or a traceback)."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sw = tmp_path / "sw"
    t0 = time.time()  # a real process: start-up included
    p = subprocess.run([sys.executable, "-m", "cluster.cli", "sweep", str(cell["spec"]), "--out", str(sw),
                        "--address", f"127.0.0.1:{port}"], env=_env(), capture_output=True, text=True, timeout=60)
    assert time.time() - t0 <= 15 and p.returncode == 1, p.stderr
    errors = [x for x in p.stderr.splitlines() if x.startswith("error")]
    assert len(errors) == 1 and "no Ray cluster answers" in errors[0] and "Traceback" not in p.stderr, p.stderr
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what `auto` resolves to: a dead cluster
    for args in (["sweep", str(cell["spec"]), "--out", str(sw), "--address", "auto"],
                 ["submit", str(cell["spec"]), "--out", str(sw), "--address", f"http://127.0.0.1:{port}"]):
        t0 = time.time()
        assert cli_main(args) == 1
        err = capsys.readouterr().err
        assert time.time() - t0 <= 15 and "no Ray" in err and "Traceback" not in err, err
    assert not sw.exists()  # nothing written before the connection


LISTEN = """
import json, os, sys
import psutil, ray
from cluster.ray_setup import init_ray
from runner.train.dist import ensure_process_group
init_ray(num_cpus=1)
ray.get(ray.remote(lambda: os.getpid()).remote())
ensure_process_group()
me = psutil.Process()
pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
out = [[c.laddr.ip, c.laddr.port, c.pid] for c in psutil.net_connections("inet")
       if c.status == psutil.CONN_LISTEN and c.pid in pids]
print(json.dumps({"listening": out, "pids": len(pids)}))
ray.shutdown()
"""


def test_local_ray_and_trainer_listen_on_loopback_only(tmp_path):
    """Without the tests' RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (what a user's shell has): every
    socket the local Ray (gcs, raylet, agents, workers, driver) and the trainer's process group
    listen on is loopback."""
    env = _env()
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    p = subprocess.run([sys.executable, "-c", LISTEN], env=env, capture_output=True, text=True, timeout=240,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["pids"] > 3 and len(res["listening"]) >= 4, res  # Ray's processes were seen
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    assert [x for x in res["listening"] if x[0] not in loopback] == [], res


def test_a_rescue_dose_that_injects_nothing_is_refused(tmp_path, capsys):
    """rescue:1e-9 used to write a "rescued" stream with 0 injected events."""
    out = tmp_path / "corpora"
    rc = cli_main(["corpus", "intervene", "rescue:1e-9", "--preset", "web", "--n-stories", "2000", "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "rounds to 0 events" in err and "raise the dose" in err
    assert not [p for p in out.iterdir() if "rescue" in p.name]
