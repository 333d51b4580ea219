"""cluster.zygote's server on its own (no Ray): it says ready once it has imported the trainer,
runs a call in a fork with the caller's environment and working folder, sends back the result
or the traceback, and refuses nothing it should serve."""

import os
import subprocess
import sys
import uuid

import pytest

from cluster.zygote import CellFailed, call_warm, socket_address

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    address = socket_address(uuid.uuid4().hex, "test-node")
    proc = subprocess.Popen([sys.executable, "-m", "cluster.zygote", address.lstrip("\0"), str(os.getpid())],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield address, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_call_runs_in_a_fork_with_the_callers_environment_and_folder(server, tmp_path, monkeypatch):
    address, proc = server
    monkeypatch.setenv("UNGROK_ZYGOTE_TEST", "from the caller")
    monkeypatch.chdir(tmp_path)
    got = call_warm(address, "tests.integration.test_zygote:_where", [])
    assert got is not None
    assert got["ppid"] == proc.pid and got["pid"] not in (proc.pid, os.getpid())  # a fork of the server
    assert got["env"] == "from the caller" and got["cwd"] == str(tmp_path)
    assert got["torch_loaded"]  # imported by the server, before the fork


def test_an_error_comes_back_with_its_traceback_and_no_server_means_none(server):
    address, _ = server
    with pytest.raises(CellFailed, match="JSONDecodeError"):
        call_warm(address, "json:loads", ["{"])
    assert call_warm(address, "json:loads", ['{"a": 1}']) == {"a": 1}
    assert call_warm(socket_address(uuid.uuid4().hex, "nobody"), "json:loads", ["{}"]) is None


def _where() -> dict:
    return {"pid": os.getpid(), "ppid": os.getppid(), "env": os.environ.get("UNGROK_ZYGOTE_TEST"),
            "cwd": os.getcwd(), "torch_loaded": "torch" in sys.modules}
