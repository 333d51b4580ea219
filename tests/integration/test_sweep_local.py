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
    assert len(workers) >= 3  # the driver and its two cell workers
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(3)
    alive = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert alive == [], f"workers outlived their driver: {alive}"
    res = run_sweep_local(g, tmp_path / "sw", workers=2, progress=False)
    assert not res.failed and res.ran + len(res.skipped) == 2 and res.ran >= 1
    sw = Sweep(tmp_path / "sw")
    assert all(sw.is_complete(c.run_id) for c in sw.cells)
