"""Faults on finished runs (issue 20): a deleted or truncated zarr chunk is a clear error naming
the run and the array, never zeros; the folder lock names its holder; files honour the umask."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main as cli_main
from runner._io import FolderBusy, hold_folder, write_json_atomic
from runner.store import RunStore, StoreDamaged
from tests.unit.fake_runs import make_run, rise_then

FAM = "pronoun_gender"


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "runs", "run-a", rise_then(0.3))


def _chunk(run: Path, key: str, index: str = "0") -> Path:
    return run / "store.zarr" / key / "c" / index


def test_every_chunk_is_written_even_one_of_fill_values(tmp_path):
    """A series that is all zeros so far still has its chunk on disk (zarr skips such chunks by
    default), so a missing chunk always means damage."""
    run = make_run(tmp_path, "zeros", [0.0, 0.0, 0.0])
    st = RunStore(run / "store.zarr")
    assert st.attrs["dense_chunks"]
    assert _chunk(run, f"{FAM}/acc_conflict_heldout").exists()
    np.testing.assert_array_equal(st.series(f"{FAM}/acc_conflict_heldout"), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_chunk_is_an_error_naming_run_and_array_never_zeros(run, capsys, damage):
    summary_before = (run / "summary.json").read_bytes() if (run / "summary.json").exists() else None
    cm_chunk = _chunk(run, f"{FAM}/cm")
    if damage == "delete":
        cm_chunk.unlink()
    else:
        cm_chunk.write_bytes(cm_chunk.read_bytes()[:5])
    with pytest.raises(StoreDamaged, match=f"run run-a: array {FAM}/cm"):
        RunStore(run / "store.zarr").series(f"{FAM}/cm")
    for args in (["show", str(run)], ["show", str(run), "--json"]):
        assert cli_main(args) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"run run-a: array {FAM}/cm" in err and "Traceback" not in err
        assert ("missing" if damage == "delete" else "cannot be decoded") in err
    after = (run / "summary.json").read_bytes() if (run / "summary.json").exists() else None
    assert after == summary_before  # never rewritten with fill values


def test_damaged_logprob_row_is_an_error_too(run):
    _chunk(run, f"{FAM}/logp_correct", "2/0").unlink()
    with pytest.raises(StoreDamaged, match=f"array {FAM}/logp_correct.*chunk c/2/0 is missing"):
        RunStore(run / "store.zarr").series(f"{FAM}/logp_correct")


def test_folder_lock_names_the_holder_and_is_released(tmp_path, capsys):
    folder = tmp_path / "run"
    code = ("import sys, time; from runner._io import hold_folder\n"
            "with hold_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=f"run folder {folder} is in use by pid {holder.pid} on "):
            with hold_folder(folder, "run folder"):
                pass
        from tests.helpers import tiny_grid_spec  # a second sweep on a held sweep folder: exit 3

        spec = tiny_grid_spec(tmp_path / "g.toml")
        assert cli_main(["sweep", str(spec), "--out", str(folder), "--no-progress"]) == 3
        assert f"sweep folder {folder} is in use by pid {holder.pid}" in " ".join(capsys.readouterr().err.split())
    finally:
        holder.kill()  # as SIGKILL would: the kernel releases the lock
        holder.wait()
    with hold_folder(folder, "run folder"):
        assert (folder / ".lock").read_text().split()[0] == str(os.getpid())


def test_a_lock_in_a_folder_that_stays_empty_leaves_no_trace(tmp_path):
    with pytest.raises(RuntimeError, match="corpus failed"):
        with hold_folder(tmp_path / "new-run"):
            raise RuntimeError("corpus failed")
    assert not (tmp_path / "new-run").exists()


def test_written_files_and_temp_folders_honour_the_umask(tmp_path):
    from runner._io import make_temp_dir

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        d = make_temp_dir(tmp_path, ".corpus.tmp-")
        os.umask(0o027)
        write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert d.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    shutil.rmtree(d)


@pytest.fixture
def read_only_sweep(tmp_path):
    """A sweep folder of two finished runs, made read-only for real: a read-only bind mount when
    running as root (permissions do not stop root), else the files' write bits removed."""
    sw = tmp_path / "sw"
    for i, final in enumerate((0.3, 0.95)):
        make_run(sw / "runs", f"run-{i}", rise_then(final), seed=i + 1)
    if os.geteuid() == 0:
        ok = subprocess.run(["mount", "--bind", str(sw), str(sw)], capture_output=True).returncode == 0 and \
            subprocess.run(["mount", "-o", "remount,ro,bind", str(sw)], capture_output=True).returncode == 0
        if not ok:
            subprocess.run(["umount", str(sw)], capture_output=True)
            pytest.skip("running as root without mount: cannot make a folder read-only")
        try:
            yield sw
        finally:
            subprocess.run(["umount", str(sw)], check=True)
    else:
        subprocess.run(["chmod", "-R", "a-w", str(sw)], check=True)
        try:
            yield sw
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(sw)], check=True)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def test_show_verdict_report_work_on_a_read_only_sweep(read_only_sweep, tmp_path, capsys):
    sw = read_only_sweep
    with pytest.raises(OSError):
        (sw / "probe").write_text("x")  # it is read-only
    before = _snapshot(sw)
    prereg = tmp_path / "prereg.toml"
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "prereg.toml", prereg)
    assert cli_main(["prereg", "lock", str(prereg)]) == 0
    capsys.readouterr()
    run = sw / "runs" / "run-0"
    assert cli_main(["show", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["families"][FAM]["label"] == "DISPLACED"
    assert cli_main(["show", str(run)]) == 0
    assert "not written" in capsys.readouterr().out
    assert cli_main(["verdict", str(sw), "--prereg", str(prereg)]) == 0
    assert "pass --json PATH" in " ".join(capsys.readouterr().out.split())
    assert cli_main(["report", str(sw), "--prereg", str(prereg), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").exists() or list((tmp_path / "report").glob("*.html"))
    assert _snapshot(sw) == before


def test_a_damaged_run_in_a_folder_is_named(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "run-0", rise_then(0.3))
    make_run(runs, "run-1", rise_then(0.9), seed=2)
    (runs / "run-1" / "run.json").write_text("")  # cut short
    prereg = tmp_path / "prereg.toml"
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "prereg.toml", prereg)
    assert cli_main(["prereg", "lock", str(prereg)]) == 0
    assert cli_main(["verdict", str(runs), "--prereg", str(prereg)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{runs / 'run-1' / 'run.json'}: not valid JSON" in err and "Traceback" not in err


def test_unclear_messages_now_name_the_problem(tmp_path, capsys):
    assert cli_main(["verdict", str(tmp_path), "--prereg", str(tmp_path / "nope.toml")]) == 2
    assert "prereg file" in capsys.readouterr().err
    assert cli_main(["train", "--battery", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is a folder, not a file" in " ".join(capsys.readouterr().err.split())
    spec = tmp_path / "g.toml"
    from tests.helpers import tiny_grid_spec

    tiny_grid_spec(spec)
    assert cli_main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--num-cpus", "0"]) == 2
    assert "--num-cpus 0: the local Ray needs at least 1 CPU" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "sw").exists() and not (tmp_path / "o").exists()


def test_a_dead_builders_temporary_folder_is_removed_by_the_next_build(tmp_path):
    """A corpus build killed by SIGKILL leaves ``.<name>.tmp-<pid>@<host>~...``; the next build in
    that folder removes it (its pid is dead), never a live builder's or another host's."""
    import socket

    from runner._io import make_temp_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".web-s0.tmp-{dead.stdout.strip()}@{host}~abc"
    live = tmp_path / f".web-s0.tmp-{os.getpid()}@{host}~def"
    other = tmp_path / f".web-s0.tmp-{dead.stdout.strip()}@another-host~ghi"
    for d in (stale, live, other):
        d.mkdir()
    new = make_temp_dir(tmp_path, ".web-s0.tmp-")
    assert not stale.exists() and live.exists() and other.exists() and new.exists()
    assert new.name.startswith(f".web-s0.tmp-{os.getpid()}@{host}~")
