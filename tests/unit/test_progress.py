"""Plain progress lines (``runner._progress``) for logs: when they are due, what they say, and the
train / sweep callbacks that write them when stdout is not a terminal."""

import io
import math
from types import SimpleNamespace

import pytest

from runner._progress import PREFIX, Ticker, fmt_seconds, plain_progress, track
from runner.train.callbacks import ProgressBar, ProgressLines, default_callbacks


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_when_not_a_terminal_and_env_overrides(monkeypatch):
    monkeypatch.delenv("UNGROK_PROGRESS", raising=False)
    assert plain_progress(io.StringIO()) is True
    assert plain_progress(Tty()) is False
    monkeypatch.setenv("UNGROK_PROGRESS", "plain")
    assert plain_progress(Tty()) is True
    monkeypatch.setenv("UNGROK_PROGRESS", "bar")
    assert plain_progress(io.StringIO()) is False


def test_fmt_seconds():
    assert [fmt_seconds(s) for s in (5, 75.2, 4000, math.nan, math.inf)] == ["5s", "1m15s", "1h06m", "?", "?"]


def test_ticker_writes_every_n_steps_with_rate_and_eta(monkeypatch):
    monkeypatch.delenv("UNGROK_PROGRESS_EVERY", raising=False)
    lines, clock = [], Clock()
    t = Ticker("train r", 100, every=25, seconds=1e9, log=lines.append, clock=clock)
    for step in range(1, 100):
        clock.t += 0.5  # 2 steps/s
        t.update(step, "loss 1.0")
    assert len(lines) == 3  # at 25, 50, 75
    assert lines[0] == f"{PREFIX} train r: 25/100 (25%)  2 steps/s  ETA 38s  loss 1.0"
    t.done_line()
    assert lines[-1].startswith(f"{PREFIX} train r: 100/100 (100%)") and "done in 50s" in lines[-1]
    assert "ETA" not in lines[-1]


def test_ticker_writes_every_30_s_when_it_moves_and_env_sets_n(monkeypatch):
    monkeypatch.setenv("UNGROK_PROGRESS_EVERY", "1000")
    lines, clock = [], Clock()
    t = Ticker("cell x", 5000, log=lines.append, clock=clock)
    assert t.every == 1000 and t.seconds == 30.0
    clock.t += 31
    assert t.update(0) is False  # no movement, no line
    assert t.update(3) is True and "3/5000" in lines[-1]
    clock.t += 10
    assert t.update(4) is False  # neither 30 s nor N steps since the last line


def test_default_callbacks_pick_lines_when_piped(monkeypatch):
    monkeypatch.setenv("UNGROK_PROGRESS", "plain")
    assert isinstance(default_callbacks(0)[-1], ProgressLines)
    monkeypatch.setenv("UNGROK_PROGRESS", "bar")
    assert isinstance(default_callbacks(0)[-1], ProgressBar)
    assert not any(isinstance(c, (ProgressBar, ProgressLines)) for c in default_callbacks(0, progress=False))
    assert not any(isinstance(c, (ProgressBar, ProgressLines)) for c in default_callbacks(1))


def test_train_progress_lines_through_a_run(monkeypatch):
    monkeypatch.delenv("UNGROK_PROGRESS_SECONDS", raising=False)
    lines: list[str] = []
    cfg = SimpleNamespace(run_id="r1", train=SimpleNamespace(steps=40),
                          probes=SimpleNamespace(families=["fam"]))
    ctx = SimpleNamespace(cfg=cfg, start=0, log=lines.append, metrics={"fam/acc_conflict_heldout": 0.5, "fam/cm": 0.1})
    cb = ProgressLines(every=10)
    cb.on_start(ctx)
    for step in range(41):
        if step % 20 == 0:
            cb.on_checkpoint(ctx, step, 2.0)
        cb.on_step(ctx, step)
    cb.on_end(ctx)
    assert all(line.startswith(f"{PREFIX} train r1: ") for line in lines)
    assert [line.split(": ")[2].split(" ")[0] for line in lines] == ["0/40", "10/40", "20/40", "30/40", "40/40"]
    assert "started" in lines[0] and "loss 2.000  fam conflict 0.50  CM +0.10" in lines[2]
    assert "done in" in lines[-1]


def test_sweep_progress_lines_per_cell(tmp_path):
    from cluster.sweep_ui import ProgressLines as SweepLines

    lines: list[str] = []
    cell = SimpleNamespace(run_id="abc", label="web/none/s1", config=SimpleNamespace(train=SimpleNamespace(steps=40)))
    other = SimpleNamespace(run_id="def", label="stories/kill/s1", config=cell.config)
    cb = SweepLines(tmp_path, log=lines.append)
    cb.on_cell_start(cell)
    cb.on_cell_start(other)
    cb.on_cell_done(cell, {"node_id": "n0123456789"})
    cb.on_cell_failed(other, "Traceback ...\nValueError: boom\n")
    assert lines[0] == f"{PREFIX} cell web/none/s1: 0/40 (0%)  submitted"
    assert lines[2].startswith(f"{PREFIX} cell web/none/s1: 40/40 (100%)") and "complete (node n0123456)" in lines[2]
    assert lines[3] == f"{PREFIX} cell stories/kill/s1: failed: ValueError: boom"
    assert cb.tickers == {}


@pytest.mark.parametrize("total", [None, 0])
def test_ticker_without_a_total(total):
    lines, clock = [], Clock()
    t = Ticker("rescore", total, every=2, log=lines.append, clock=clock, unit="rows")
    clock.t += 1
    t.update(2)
    assert lines == [f"{PREFIX} rescore: 2  2 rows/s"]


def test_public_scoring_bar_is_lines_when_piped(monkeypatch):
    from cluster.public import _bar

    monkeypatch.setenv("UNGROK_PROGRESS", "plain")
    lines: list[str] = []
    bar, task = _bar(2, lines.append)
    for _ in range(2):
        bar.advance(task)
    bar.stop()
    assert lines[0].startswith(f"{PREFIX} public: scoring checkpoints: 1/2 (50%)")
    assert lines[-1].startswith(f"{PREFIX} public: scoring checkpoints: 2/2 (100%)") and "done in" in lines[-1]


def test_stream_build_writes_a_line_as_it_starts_and_ends(monkeypatch, tmp_path):
    import runner.data.streams as streams

    monkeypatch.setattr(streams, "_build_streams", lambda cfg, d: (tmp_path / "base", None))
    lines: list[str] = []
    cfg = SimpleNamespace(run_id="r1", dose="kill:1.0")
    assert streams.build_streams(cfg, tmp_path, lines.append) == (tmp_path / "base", None)  # type: ignore[arg-type]
    assert len(lines) == 2 and "streams of r1 (dose kill:1.0): building" in lines[0]
    assert lines[1].startswith(f"{PREFIX} streams of r1: ready in ")
    assert streams.build_streams(cfg, tmp_path) == (tmp_path / "base", None)  # type: ignore[arg-type]
    assert len(lines) == 2  # no log, no lines


def test_track_yields_every_item_with_a_line_each_and_a_closing_line():
    lines: list[str] = []
    seen = list(track([10, 20, 30], "localize f", unit="checkpoints", log=lines.append, every=1,
                      info=lambda s: f"step {s}"))
    assert seen == [10, 20, 30] and len(lines) == 3
    assert lines[0].startswith(f"{PREFIX} localize f: 1/3 (33%)") and lines[0].endswith("step 10")
    assert lines[-1].startswith(f"{PREFIX} localize f: 3/3 (100%)") and "done in" in lines[-1]
    assert list(track([1, 2], "quiet", log=None)) == [1, 2]  # no log, no lines


def test_audit_ticker_starts_a_new_ticker_for_each_pass():
    from cluster.cli_analysis import _audit_ticker

    lines: list[str] = []
    progress = _audit_ticker("audit c", lambda *a, **kw: Ticker(*a, **kw, every=10**6, log=lines.append))
    for n in (5, 10):  # first pass (built-in families): a line only at its total
        progress(n, 10)
    for n in (4, 10):  # second pass (rule-versus-prior families) starts again at the beginning
        progress(n, 10)
    assert [ln.split(":", 2)[2].split()[0] for ln in lines] == ["10/10", "10/10"]


def test_a_queued_cell_counts_its_rate_from_when_it_starts():
    lines, clock = [], Clock()
    t = Ticker("cell c", 100, every=10, seconds=1e9, log=lines.append, clock=clock)
    t.update(0, "submitted", force=True)
    clock.t += 600.0  # ten minutes in the queue
    t.rebase(0)
    clock.t += 5.0
    t.update(10)
    assert lines[-1] == f"{PREFIX} cell c: 10/100 (10%)  2 steps/s  ETA 45s"
