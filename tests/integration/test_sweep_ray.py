"""Sweeps on a real local Ray, a multi-node cluster_utils.Cluster, `ray start --head` + Jobs API,
and fault injection (SIGKILL of a worker and of the driver). Every Ray process stays on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main as cli_main
from cluster.sweep import Sweep, run_sweep
from runner.grid import GridError
from runner.store import RunStore
from tests.helpers import tiny_grid_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

def spec(tmp_path, seeds=(1, 2), steps=40, extra="", name="g.toml"):
    return tiny_grid_spec(tmp_path / name, seeds=seeds, steps=steps, extra=extra)


def _attempts(sweep_dir: Path, run_id: str) -> list[dict]:
    f = sweep_dir / "runs" / run_id / "attempts.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def test_local_sweep_completes_then_skips(tmp_path, local_ray):
    g = spec(tmp_path)
    res = run_sweep(g, tmp_path / "sw", progress=False)
    assert res.ran == 2 and not res.failed and res.efficiency > 0
    sw = Sweep(tmp_path / "sw")
    for c in sw.cells:
        assert sw.is_complete(c.run_id)
        assert len(_attempts(sw.dir, c.run_id)) == 1
    import xarray as xr

    ds = xr.open_zarr(str(sw.store_path), group=f"runs/{sw.cells[0].run_id}/pronoun_gender", consolidated=True)
    assert ds.sizes["step"] == 3
    man = json.loads((sw.dir / "manifest.json").read_text())
    assert {c["state"] for c in man["cells"]} == {"complete"}
    assert man["last_run"]["wall_seconds"] == res.wall_seconds and man["last_run"]["ran"] == 2
    again = run_sweep(g, tmp_path / "sw", progress=False)
    assert len(again.skipped) == 2 and again.ran == 0
    assert json.loads((sw.dir / "manifest.json").read_text())["last_run"]["ran"] == 0  # the latest run's figures
    assert all(len(_attempts(sw.dir, c.run_id)) == 1 for c in sw.cells)
    # status and verdict-side readers see the runs
    assert cli_main(["status", str(sw.dir)]) == 0


def _zygote_sockets() -> set[str]:
    """The abstract Unix sockets of warm servers listening now (/proc/net/unix: '@' + name)."""
    with open("/proc/net/unix") as f:
        return {line.split()[-1] for line in f if "@ungrok-zygote-" in line}


def test_cells_train_in_forks_of_the_nodes_warm_server_bit_identically(tmp_path, local_ray):
    """A CPU cell's Ray task hands the cell to its node's warm server (cluster.zygote), which
    forks a process for it: the attempt says so, the scores equal a run trained in-process bit
    for bit, and the server is gone once the sweep has ended."""
    from runner.train import train_run

    before = _zygote_sockets()
    res = run_sweep(spec(tmp_path, seeds=(3,)), tmp_path / "sw", progress=False)
    assert res.ran == 1 and not res.failed
    sw = Sweep(tmp_path / "sw")
    cell = sw.cells[0]
    (attempt,) = _attempts(sw.dir, cell.run_id)
    assert attempt["start"] == "warm fork"
    ref = train_run(cell.config, tmp_path / "ref", progress=False, log=lambda *_: None)
    a, b = RunStore(ref / "store.zarr"), RunStore(sw.store_path, f"runs/{cell.run_id}")
    assert list(a.steps()) == list(b.steps()) == [0, 20, 40]
    for key in ["train/loss", *(f"{f}/{k}" for f in a.families() for k in ("logp_correct", "logp_distractor"))]:
        np.testing.assert_array_equal(a.series(key), b.series(key), err_msg=key)
    deadline = time.time() + 10
    while _zygote_sockets() - before and time.time() < deadline:
        time.sleep(0.2)
    assert not _zygote_sockets() - before  # the server left with its actor


def test_application_error_is_reported_per_cell(tmp_path, local_ray):
    g = tmp_path / "bad.toml"
    g.write_text(spec(tmp_path).read_text().replace('corpora = ["web"]', f'corpora = ["hf:{tmp_path}/missing"]'))
    res = run_sweep(g, tmp_path / "sw", progress=False)
    assert len(res.failed) == 2
    man = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    assert all("no dataset folder" in c["error"] for c in man["cells"])


def test_resources_no_node_can_satisfy(tmp_path, local_ray):
    g = spec(tmp_path, extra="custom = { gpu_box = 1 }")
    with pytest.raises(GridError, match="resources.custom.gpu_box = 1.0: no node"):
        run_sweep(g, tmp_path / "sw", progress=False)
    assert not (tmp_path / "sw" / "runs").exists()


def test_multi_node_cells_land_on_both_workers(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
    a = cluster.add_node(num_cpus=1, resources={"slot": 1, "node_a": 1}, node_ip_address="127.0.0.1")
    b = cluster.add_node(num_cpus=1, resources={"slot": 1, "node_b": 1}, node_ip_address="127.0.0.1")
    try:
        from cluster.sweep import init_ray

        init_ray(address=cluster.address)
        g = spec(tmp_path, seeds=(1, 2), steps=60, extra="custom = { slot = 1 }")
        res = run_sweep(g, tmp_path / "sw", progress=False)
        assert res.ran == 2 and not res.failed
        sw = Sweep(tmp_path / "sw")
        nodes = {_attempts(sw.dir, c.run_id)[0]["node_id"] for c in sw.cells}
        assert nodes == {a.node_id, b.node_id}
        assert all(sw.is_complete(c.run_id) for c in sw.cells)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    """The environment of the `ray` and `ungrok` commands: this interpreter's scripts first on PATH
    (so the test finds them when pytest runs as `.venv/bin/python -m pytest`, venv not activated)."""
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


def test_ray_start_head_sweep_address_and_jobs_submit(tmp_path):
    """A real `ray start --head` on 127.0.0.1, `ungrok sweep --address` against it, and `ungrok
    submit` through the Jobs API.

    Token authentication stays on, as Ray defaults it; everything stays on loopback."""
    port, dport = _free_port(), _free_port()
    head = ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dport}", "--include-dashboard=true",
            f"--dashboard-agent-listen-port={_free_port()}",  # not the fixed default: another Ray may hold it
            "--disable-usage-stats"]
    subprocess.run(head, check=True, env=_env(), capture_output=True, timeout=180)
    try:
        g = spec(tmp_path, seeds=(1,))
        p = subprocess.run([sys.executable, "-m", "cluster.cli", "sweep", str(g), "--out", str(tmp_path / "sw"),
                            "--address", f"127.0.0.1:{port}", "--no-progress"],
                           env=_env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        assert Sweep(tmp_path / "sw").is_complete(Sweep(tmp_path / "sw").cells[0].run_id)
        g2 = spec(tmp_path, seeds=(3,), name="g2.toml")
        p = subprocess.run([sys.executable, "-m", "cluster.cli", "submit", str(g2), "--address",
                            f"http://127.0.0.1:{dport}", "--out", str(tmp_path / "sw2")],
                           env=_env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "submitted job" in p.stdout and "SUCCEEDED" in p.stdout
        sw2 = Sweep(tmp_path / "sw2")
        assert sw2.is_complete(sw2.cells[0].run_id)
    finally:
        _stop_cluster(port)


def _stop_cluster(port: int):
    """Stop only the cluster this test started (never `ray stop`, which kills every Ray on the
    machine): every process whose command line names its GCS port."""
    marks = (f"127.0.0.1:{port}", f"gcs_server_port={port}", f"--port={port}")
    mine = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if any(m in cmd for m in marks) and int(pid) != os.getpid():
            mine.append(int(pid))
    for pid in mine:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# SIGKILL-then-resume is covered by tests/integration/test_faults.py (a kill in each of the first three
# checkpoint intervals and inside the step-0 checkpoint, for `train` and for a sweep worker, each
# compared bit for bit with an uninterrupted run); the slower mid-run copy that stood here was removed.


def test_driver_kill_then_rerun_redoes_no_finished_cell(tmp_path):
    g = spec(tmp_path, seeds=(1, 2), steps=40)
    sw_dir = tmp_path / "sw"
    args = [sys.executable, "-m", "cluster.cli", "sweep", str(g), "--out", str(sw_dir), "--num-cpus", "1",
            "--no-progress"]
    p = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    from runner.grid import load_grid

    cells = load_grid(g).cells()
    deadline = time.time() + 400

    def first_done():
        return (sw_dir / "grid.toml").exists() and Sweep(sw_dir).is_complete(cells[0].run_id)

    while not first_done():
        assert p.poll() is None
        assert time.time() < deadline
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and the local Ray it started
    p.wait()
    first = RunStore(sw_dir / "store.zarr", f"runs/{cells[0].run_id}").attrs["completed_utc"]
    p2 = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    sw = Sweep(sw_dir)
    assert RunStore(sw_dir / "store.zarr", f"runs/{cells[0].run_id}").attrs["completed_utc"] == first
    assert len(_attempts(sw_dir, cells[0].run_id)) == 1  # not redone
    assert all(sw.is_complete(c.run_id) for c in cells)
