"""Exit codes and one-line errors of every ``ungrok`` command (issue 20, item 2): usage errors
exit 2 with click's message, failures exit 1, a held folder 3, Ctrl-C 130; never a traceback
unless ``--debug``. The table is docs/exit-codes.md."""

from pathlib import Path

import pytest
import typer.main

from cluster import cli_errors as codes
from cluster.cli import app
from cluster.cli import main as cli_main


def _commands(cmd=None, path=()):
    cmd = cmd or typer.main.get_command(app)
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, [p for p in cmd.params if p.param_type_name == "argument" and p.required]


COMMANDS = list(_commands())


def _run(capsys, args) -> tuple[int, str]:
    rc = cli_main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_every_command_is_walked():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"train", "sweep", "submit", "show", "verdict", "report", "prereg lock", "mech capture"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_unknown_option_is_a_usage_error_without_traceback(capsys, path):
    rc, out = _run(capsys, [*path, "--no-such-option"])
    assert rc == codes.USAGE, out
    assert "No such option" in out and "Traceback" not in out


@pytest.mark.parametrize("path,required", [(p, r) for p, r in COMMANDS if r], ids=lambda x: " ".join(x)
                         if isinstance(x, tuple) else "")
def test_missing_inputs_fail_in_one_line_without_traceback(capsys, tmp_path, path, required):
    missing = str(tmp_path / "no" / "such.file")
    args = [*path, *["bogus:1" if p.name == "dose" else missing for p in required]]
    if path == ("submit",):
        args += ["--address", "http://127.0.0.1:9", "--out", str(tmp_path / "o")]
    rc, out = _run(capsys, args)
    assert rc >= 1, out
    assert "Traceback" not in out and "error" in out.lower(), out
    assert not (tmp_path / "o").exists() and not (tmp_path / "no").exists()


@pytest.mark.parametrize("args,needle", [([], "Usage"), (["trian"], "No such command 'trian'"),
                                         (["train", "--steps", "ten"], "Invalid value for '--steps'")])
def test_usage_errors_exit_2(capsys, args, needle):
    rc, out = _run(capsys, args)
    assert rc == codes.USAGE and needle in out and "Traceback" not in out


def test_failed_cells_exit_1_and_interrupt_exits_130(capsys, monkeypatch, tmp_path):
    import cluster.sweep as sweep
    from cluster.sweep_plan import SweepResult
    from tests.helpers import tiny_grid_spec

    spec = tiny_grid_spec(tmp_path / "g.toml")
    failed = SweepResult(sweep=str(tmp_path), cells=1, completed=(), skipped=(), reused={}, failed=("web/s1",),
                         wall_seconds=1.0, sum_run_seconds=0.0, workers=1, efficiency=None)
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: failed)
    rc, out = _run(capsys, ["sweep", str(spec), "--out", str(tmp_path / "sw")])
    assert rc == codes.FAILED and "failed 1" in out

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    rc, out = _run(capsys, ["sweep", str(spec), "--out", str(tmp_path / "sw")])
    assert rc == codes.INTERRUPTED and "interrupted" in out and "Traceback" not in out


def test_a_job_that_ends_failed_exits_1(capsys, monkeypatch, tmp_path):
    import cluster.sweep as sweep
    from tests.helpers import tiny_grid_spec

    spec = tiny_grid_spec(tmp_path / "g.toml")
    monkeypatch.setattr(sweep, "submit", lambda *a, **k: ("raysubmit_1", "FAILED"))
    rc, out = _run(capsys, ["submit", str(spec), "--address", "http://h:8265", "--out", str(tmp_path / "o")])
    assert rc == codes.FAILED and "FAILED" in out


def test_internal_error_is_one_line_unless_debug(capsys, monkeypatch, tmp_path):
    import cluster.sweep as sweep
    from tests.helpers import tiny_grid_spec

    spec = tiny_grid_spec(tmp_path / "g.toml")

    def bug(*a, **k):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(sweep, "run_sweep", bug)
    rc, out = _run(capsys, ["sweep", str(spec), "--out", str(tmp_path / "sw")])
    assert rc == codes.FAILED and "Traceback" not in out
    assert "internal error: TypeError: unsupported operand" in out and "--debug" in out
    with pytest.raises(TypeError):
        cli_main(["--debug", "sweep", str(spec), "--out", str(tmp_path / "sw")])


def test_describe_disk_full_and_permission(tmp_path):
    code, line = codes.describe(OSError(28, "No space left on device", str(tmp_path / "x")))
    assert code == codes.FAILED and line.startswith("no space left on device") and "rerun" in line
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = PermissionError(13, "Permission denied", "/ro/file")
    code, line = codes.describe(wrapped)
    assert code == codes.FAILED and "/ro/file" in line and "not writable" in line
    assert Path(__file__).exists()


def test_describe_prefers_the_librarys_own_message():
    from runner.store import StoreDamaged

    try:
        try:
            raise OSError(2, "No such file or directory", "/x/c/0")
        except OSError:
            raise StoreDamaged("run r: array f/cm ...; restore the store") from None
    except StoreDamaged as e:
        code, line = codes.describe(e)
    assert code == codes.FAILED and line.startswith("run r: array f/cm")


def test_show_of_a_run_with_a_damaged_config_is_one_line(capsys, tmp_path):
    from tests.unit.fake_runs import make_run

    run = make_run(tmp_path, "r", [0.5, 1.0, 1.0, 1.0])
    (run / "config.json").write_text('{"dose": "resc')  # cut short
    rc, out = _run(capsys, ["show", str(run)])
    assert rc != 0 and "config.json: not valid JSON" in out and "Traceback" not in out and "internal error" not in out
    assert len(out.strip().splitlines()) == 1
