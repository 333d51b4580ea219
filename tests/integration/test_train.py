"""A real DeepSpeed engine on a tiny model, a real zarr store, real subprocess kills."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from cluster.cli import main as cli_main
from runner.model import load_model, weights_path
from runner.scoring import battery_for, continuation_logprobs, encode_battery
from runner.store import RunStore
from runner.train import StopAt, TrainCallback, train_run
from tests.helpers import tiny_run_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_train_writes_store_weights_and_summary(tmp_path):
    cfg = tiny_run_config(schedule={"every": 20}, train={"steps": 120}, corpus={"n_stories": 2000})
    run = train_run(cfg, tmp_path, progress=False)
    assert run.name == cfg.run_id
    store = RunStore(run / "store.zarr")
    assert store.attrs["complete"] and list(store.steps()) == [0, 20, 40, 60, 80, 100, 120]
    a = store.attrs  # phase breakdown: every phase ran, and the parts add up to the whole
    assert min(a["score_seconds"], a["checkpoint_seconds"], a["step_seconds"]) > 0
    assert abs(a["score_seconds"] + a["checkpoint_seconds"] + a["step_seconds"] - a["train_seconds"]) < 0.05
    ds = xr.open_zarr(str(run / "store.zarr"), group="pronoun_gender", consolidated=False)
    assert ds["logp_correct"].dims == ("step", "item") and ds.sizes["step"] == 7
    loss = store.series("train/loss")
    assert np.isnan(loss[0]) and loss[-1] < loss[1]  # it learns
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["families"]) == {"pronoun_gender", "number_agreement"}
    # stored log-probs equal a fresh forward pass of the saved weights
    model = load_model(run, 120)
    items = battery_for(cfg)
    from runner.data.corpora import load_corpus

    c = load_corpus(tmp_path / "corpora" / cfg.corpus.dirname)
    tok = c.tokenizer
    enc = encode_battery(items, tok, tok.token_to_id("<bos>"), cfg.model.n_ctx, pad_id=c.pad_id)
    lpc, _ = continuation_logprobs(model, enc)
    fam = np.array([it.family for it in items]) == "pronoun_gender"
    np.testing.assert_allclose(ds["logp_correct"].values[-1], lpc[fam], rtol=1e-5, atol=1e-5)
    # a second call skips the finished run
    assert train_run(cfg, tmp_path, progress=False, log=lambda *_: None) == run
    assert RunStore(run / "store.zarr").n_complete == 7


@pytest.mark.parametrize("zero_stage", [1, 2])
def test_zero_stages_train(tmp_path, zero_stage):
    cfg = tiny_run_config(train={"steps": 20, "zero_stage": zero_stage}, schedule={"every": 10})
    run = train_run(cfg, tmp_path, progress=False)
    assert RunStore(run / "store.zarr").attrs["complete"]


def test_dn_budget_cycles(tmp_path):
    cfg = tiny_run_config(train={"budget": "dn1", "steps": 60}, schedule={"every": 20})
    run = train_run(cfg, tmp_path, progress=False)
    meta = json.loads((run / "run.json").read_text())
    # unique tokens = 1 x parameter count, fewer rows than the 60 x 16 the run consumed: it cycled
    assert meta["unique_rows"] < 60 * 16
    assert RunStore(run / "store.zarr").attrs["complete"]


class _Record(TrainCallback):
    """Records which hooks the loop called, with their steps."""

    def __init__(self):
        self.calls = []

    def on_start(self, ctx):
        self.calls.append(("start", ctx.start))

    def on_checkpoint(self, ctx, step, loss):
        self.calls.append(("checkpoint", step))

    def on_step(self, ctx, step):
        self.calls.append(("step", step))

    def on_end(self, ctx):
        self.calls.append(("end", None))

    def on_close(self, ctx):
        self.calls.append(("close", None))


def test_stop_at_then_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_run_config(train={"steps": 120, "seed": 5}, schedule={"every": 20, "keep_resume": 2})
    ref = train_run(cfg, tmp_path / "a", progress=False)
    # StopAt(30) ends the run right after the first checkpoint at or after step 30: step 40
    first = _Record()
    run = train_run(cfg, tmp_path / "b", progress=False, callbacks=[StopAt(30), first])
    store = RunStore(run / "store.zarr")
    assert list(store.steps()) == [0, 20, 40] and not store.attrs["complete"]
    assert not (run / "summary.json").exists() and weights_path(run, 40).exists()
    assert first.calls[-2:] == [("checkpoint", 40), ("close", None)]  # no on_step(40), no on_end
    # the rerun resumes from step 40: no checkpoint hook for it, every later step observed once
    again = _Record()
    assert train_run(cfg, tmp_path / "b", progress=False, log=lambda *_: None, callbacks=[again]) == run
    calls = again.calls
    assert calls[0] == ("start", 40) and calls[-2:] == [("end", None), ("close", None)]
    assert [s for h, s in calls if h == "checkpoint"] == [60, 80, 100, 120]
    assert [s for h, s in calls if h == "step"] == list(range(40, 121))
    assert calls.index(("checkpoint", 60)) < calls.index(("step", 60))
    a, b = RunStore(ref / "store.zarr"), RunStore(run / "store.zarr")
    assert b.attrs["complete"] and list(a.steps()) == list(b.steps())
    for key in ["train/loss", "train/lr", *(f"{f}/{k}" for f in a.families()
                                            for k in ("logp_correct", "logp_distractor", "cm"))]:
        np.testing.assert_array_equal(a.series(key), b.series(key))
    assert json.loads((ref / "summary.json").read_text()) == json.loads((run / "summary.json").read_text())
    wa, wb = load_model(ref).state_dict(), load_model(run).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in (run / "checkpoints").glob("step*")) == ["step0000100", "step0000120"]


def test_the_probe_count_does_not_touch_training(tmp_path):
    """Scoring reads the model and nothing else: a run scored on 4x the items trains the same
    weights bit for bit, and its first heldout conflict items (a generator's heldout conflict
    items are a prefix of a larger draw; its other cells are not) score as the smaller run's. Why
    the checkpoints of a finished run rescored with the battery of a larger ``probes.n_per_cell``
    give what a rerun with it would record (docs/world.md, the demo grid's probe count)."""
    small = train_run(tiny_run_config(train={"steps": 40}), tmp_path / "a", progress=False)
    large = train_run(tiny_run_config(train={"steps": 40}, probes={"n_per_cell": 32}), tmp_path / "b",
                      progress=False)
    a, b = RunStore(small / "store.zarr"), RunStore(large / "store.zarr")
    np.testing.assert_array_equal(a.series("train/loss"), b.series("train/loss"))
    wa, wb = load_model(small).state_dict(), load_model(large).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for fam in a.families():
        ia, ib = (np.nonzero((s.item_labels(fam, "condition") == "conflict")
                             & (s.item_labels(fam, "split") == "heldout"))[0] for s in (a, b))
        assert len(ib) == 4 * len(ia)
        np.testing.assert_allclose(a.series(f"{fam}/logp_correct")[:, ia],
                                   b.series(f"{fam}/logp_correct")[:, ib[: len(ia)]], rtol=0, atol=1e-5)


def _cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "cluster.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# SIGKILL-then-resume is covered by tests/integration/test_faults.py (a kill in each of the first three
# checkpoint intervals and inside the step-0 checkpoint, for `train` and for a sweep worker, each
# compared bit for bit with an uninterrupted run); the slower mid-run copy that stood here was removed.


@pytest.mark.parametrize("args,needle", [
    (["train", "--corpus", "nope"], "corpus.name: unknown corpus 'nope'"),
    (["train", "--budget", "dn-5"], "train.budget: budget 'dn-5' is not valid"),
    (["train", "--steps", "10000"], "corpus.n_stories"),
    (["corpus", "build", "--preset", "synthetic"], "support"),
])
def test_bad_input_clear_error_no_files(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    rc = cli_main([*args, "--out", str(out)])
    assert rc == 2
    assert needle in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_malformed_battery_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"family": "pronoun_gender", "condition": "conflict"}\n')
    out = tmp_path / "out"
    rc = cli_main(["train", "--battery", str(bad), "--out", str(out), "--no-progress"])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bad.jsonl:1" in err and "probe" in err
    assert not out.exists()
