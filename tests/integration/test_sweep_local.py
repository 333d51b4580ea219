"""Sweeps without Ray (``--executor processes``): the same folder, manifest, store and resume
semantics as the Ray sweep, from local process pools."""

import json

import pytest

from cluster.cli import main as cli_main
from cluster.sweep_local import run_sweep_local
from cluster.sweep_plan import Sweep, plan_sweep
from runner.grid import GridError
from tests.helpers import tiny_grid_spec

pytestmark = pytest.mark.slow


def test_process_sweep_completes_then_skips(tmp_path):
    g = tiny_grid_spec(tmp_path / "g.toml", seeds=(1, 2), steps=40)
    res = run_sweep_local(g, tmp_path / "sw", workers=2, progress=False)
    assert res.ran == 2 and not res.failed and res.workers == 2 and res.efficiency > 0
    sw = Sweep(tmp_path / "sw")
    man = json.loads((sw.dir / "manifest.json").read_text())
    assert {c["state"] for c in man["cells"]} == {"complete"}
    for c in sw.cells:
        assert sw.is_complete(c.run_id)
        attempts = (sw.dir / "runs" / c.run_id / "attempts.jsonl").read_text().splitlines()
        assert len(attempts) == 1 and json.loads(attempts[0])["node_id"].endswith(":cpu")
        assert "Moving model to device" in (sw.dir / "runs" / c.run_id / "worker.log").read_text()
    import xarray as xr

    ds = xr.open_zarr(str(sw.store_path), group=f"runs/{sw.cells[1].run_id}/pronoun_gender", consolidated=True)
    assert ds.sizes["step"] == 3  # consolidated after both writers finished: the second run is visible
    again = run_sweep_local(g, tmp_path / "sw", workers=2, progress=False)
    assert len(again.skipped) == 2 and again.ran == 0
    assert cli_main(["status", str(sw.dir)]) == 0


def test_stream_failure_fails_its_cells_only(tmp_path):
    g = tmp_path / "bad.toml"
    spec = tiny_grid_spec(tmp_path / "g.toml", seeds=(1,), steps=40).read_text()
    g.write_text(spec.replace('corpora = ["web"]', f'corpora = ["web", "hf:{tmp_path}/missing"]'))
    res = run_sweep_local(g, tmp_path / "sw", workers=2, progress=False)
    assert len(res.failed) == 1 and res.ran == 1
    man = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    failed = [c for c in man["cells"] if c["state"] == "failed"]
    assert len(failed) == 1 and "missing" in failed[0]["error"]


def test_refusals_before_anything_is_written(tmp_path, capsys):
    g = tiny_grid_spec(tmp_path / "g.toml", seeds=(1,), steps=40)
    with pytest.raises(GridError, match="--gpu-workers 3"):
        run_sweep_local(g, tmp_path / "sw", workers=2, gpu_workers=3, progress=False)
    with pytest.raises(ValueError, match="cpu_start 'fork'"):
        run_sweep_local(g, tmp_path / "sw", workers=2, cpu_start="fork", progress=False)
    multi = tmp_path / "multi.toml"
    multi.write_text(g.read_text().replace("num_cpus = 1", "num_cpus = 1\nnum_gpus = 2"))
    with pytest.raises(GridError, match="Ray Train"):
        run_sweep_local(multi, tmp_path / "sw", workers=2, progress=False)
    assert not (tmp_path / "sw").exists()
    assert cli_main(["sweep", str(g), "--out", str(tmp_path / "sw"), "--executor", "dask"]) != 0
    err = capsys.readouterr().err
    assert "--executor 'dask'" in err and "Traceback" not in err
    assert plan_sweep(g, tmp_path / "sw2").to_run  # the spec itself is fine


def test_killed_driver_takes_its_workers_and_a_rerun_resumes(tmp_path):
    """SIGKILL the driver while its workers train: the workers die with it (nothing keeps
    training or holds a run folder), and the same command again completes every cell."""
    import os
    import signal
    import subprocess
    import sys
    import time

    g = tiny_grid_spec(tmp_path / "g.toml", seeds=(1, 2), steps=200)
    cmd = [sys.executable, "-m", "cluster.cli", "sweep", str(g), "--out", str(tmp_path / "sw"), "--executor",
           "processes", "--workers", "2", "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = tmp_path / "sw" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(runs.glob("*/worker.log"))) < 2:
        time.sleep(0.5)
    time.sleep(3)
    workers = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 4  # the driver, its forkserver and two cell workers
    cell_pids = [json.loads((d / "attempts.jsonl").read_text().splitlines()[-1])["pid"] for d in runs.iterdir()]
    servers = {_ppid(pid) for pid in cell_pids}
    assert len(servers) == 1 and p.pid not in servers and _ppid(servers.pop()) == p.pid  # forked by the server
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(3)
    alive = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert alive == [], f"workers outlived their driver: {alive}"
    res = run_sweep_local(g, tmp_path / "sw", workers=2, progress=False)
    assert not res.failed and res.ran + len(res.skipped) == 2 and res.ran >= 1
    sw = Sweep(tmp_path / "sw")
    assert all(sw.is_complete(c.run_id) for c in sw.cells)


def _ppid(pid: int) -> int:
    """A live process's parent, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def _arrays(store) -> dict:
    """Every array of a zarr store, by path."""
    import zarr

    out = {}

    def walk(group, prefix: str) -> None:
        for name, arr in group.arrays():
            out[prefix + name] = arr[...]
        for name, sub in group.groups():
            walk(sub, prefix + name + "/")

    walk(zarr.open_group(str(store), mode="r"), "")
    return out


def test_cpu_workers_fork_from_a_warm_server_with_cuda_hidden():
    """The CPU workers' forkserver imported the trainer with CUDA hidden and no thread of its own;
    the driver's environment is as it was; there is one server per driver."""
    import os
    from multiprocessing import forkserver

    from cluster.preload import MARK, server_report
    from cluster.sweep_local import cpu_context, cpu_pool

    env = dict(os.environ)
    ctx = cpu_context("forkserver")
    assert dict(os.environ) == env and MARK not in os.environ
    server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    with cpu_pool(1, ctx) as pool:
        rep, ppid = pool.submit(server_report).result(), pool.submit(os.getppid).result()
    with cpu_pool(1, cpu_context("forkserver")) as pool:
        again, mark = pool.submit(server_report).result(), pool.submit(os.getenv, MARK).result()
    assert rep["warm"] and not rep["failed"] and rep["pid"] == ppid == server == again["pid"]
    assert rep["cuda_visible_devices"] == "" and not rep["cuda_initialized"] and mark is None
    assert rep["python_threads"] == 1 and rep["seconds"]["torch"] > 0 and "transformer_lens" in rep["seconds"]
    assert server_report() == {}  # the driver imported nothing on the server's behalf


def test_forked_cell_trains_bit_identically_to_a_spawned_one(tmp_path):
    """One cell, once in a spawned worker and once forked from the warm server: the same stored
    scores and losses (every array of the store) and the same weights, bit for bit."""
    import numpy as np
    from safetensors.numpy import load_file

    from cluster.sweep_local import cpu_context

    assert cpu_context("forkserver").get_start_method() == "forkserver"  # what the sweep gets: a warm server
    g = tiny_grid_spec(tmp_path / "g.toml", seeds=(1,), steps=40)
    for start in ("spawn", "forkserver"):
        res = run_sweep_local(g, tmp_path / start, workers=1, progress=False, cpu_start=start)
        assert res.ran == 1 and not res.failed
    a, b = _arrays(tmp_path / "spawn" / "store.zarr"), _arrays(tmp_path / "forkserver" / "store.zarr")
    assert sorted(a) == sorted(b) and any(k.endswith("train/loss") for k in a)
    differ = [k for k in a if a[k].dtype != b[k].dtype
              or not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")]
    assert differ == []
    weights = sorted((tmp_path / "spawn" / "runs").glob("*/weights/*.safetensors"))
    assert len(weights) == 3
    for w in weights:
        x, y = load_file(w), load_file(tmp_path / "forkserver" / w.relative_to(tmp_path / "spawn"))
        assert sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)
