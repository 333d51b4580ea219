"""The paper preset through DeepSpeed on CPU: its architecture, Muon + AdamW and schedule at a tiny
shape, on a tiny real-text BPE corpus with the paper's battery (rvp4) attached; resume, scoring and
capture as for any run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from runner.config import RunConfig
from runner.grid import RUN_PRESETS
from runner.model import load_model
from runner.scoring import continuation_logprobs, encode_battery
from runner.store import RunStore
from runner.train import StopAt, TrainCallback, train_run
from runner.train.optim import MuonAdamW, lr_factor

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "kjv_sample.jsonl.gz"
STEPS = 30


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A real-text corpus (the KJV sample, byte-level BPE of 1,024) built the way `ungrok corpus
    build --source text:...` builds one."""
    from runner.data.textcorpus import TextCorpusSpec, build_text_corpus

    root = tmp_path_factory.mktemp("corpora")
    path = build_text_corpus(TextCorpusSpec(name="kjv", source=f"text:{SAMPLE}", tokenizer="bpe:1024"), root,
                             workers=1)
    return root, json.loads((path / "manifest.json").read_text())["sha256"]


def tiny_paper(sha: str, battery: str) -> RunConfig:
    """The paper preset (nanochat decoder, 4 layers, soft-cap 15, Muon + AdamW, no warm-up, cosine
    warm-down over the final 30%, wd 0.2 -> 0 on the matrices: its TinyStories arm) shrunk to
    d_model 32, context 64, the tokenizer's vocabulary, 30 steps of 8 rows, dn1.5."""
    sec = RUN_PRESETS.get("paper").sections_for("built:kjv", "tinystories")
    sec["model"].update(d_model=32, n_heads=2, d_mlp=128, n_ctx=64, d_vocab=None)
    sec["corpus"].update(name="built:kjv", sha256=sha, story_tokens=64)
    sec["train"].update(steps=STEPS, batch_size=8, budget="dn1.5", seed=3)
    sec["schedule"] = {"every": 10, "dense_every": 5, "dense_start": 10, "dense_end": 25}
    sec["probes"] = {"battery": battery}
    return RunConfig.model_validate(sec)


class _Seen(TrainCallback):
    def on_start(self, ctx):
        self.optimizer = ctx.engine.optimizer
        self.dtype = next(ctx.model.parameters()).dtype


@pytest.fixture(scope="module")
def runs(corpora, tmp_path_factory):
    """The same run twice: straight through, and stopped after step 10 then resumed."""
    from tests.helpers import REFERENCE_BATTERY

    battery = str(Path(REFERENCE_BATTERY).resolve())
    if not Path(battery).exists():
        pytest.skip(f"reference battery not found at {battery}")
    root, sha = corpora
    cfg = tiny_paper(sha, battery)
    out = tmp_path_factory.mktemp("paper")
    seen = _Seen()
    a = train_run(cfg, out / "a", corpora_dir=root, progress=False, log=lambda *_: None, callbacks=[seen])
    b = train_run(cfg, out / "b", corpora_dir=root, progress=False, log=lambda *_: None, callbacks=[StopAt(10)])
    assert not RunStore(b / "store.zarr").attrs.get("complete")
    assert train_run(cfg, out / "b", corpora_dir=root, progress=False, log=lambda *_: None) == b
    return cfg, a, b, seen


def test_the_preset_trains_with_muon_and_its_schedule(runs):
    cfg, a, _, seen = runs
    assert isinstance(seen.optimizer, MuonAdamW) and seen.dtype == torch.float32
    assert [type(o).__name__ for o in seen.optimizer.parts] == ["Muon", "AdamW"]
    store = RunStore(a / "store.zarr")
    steps = list(store.steps())
    assert steps == [0, 10, 15, 20, 25, 30] and store.attrs["complete"]
    # train/lr is the matrix group's lr for the update after each checkpoint: 0.04 x the schedule
    want = [0.04 * lr_factor(cfg.optim, s, STEPS) for s in steps]
    np.testing.assert_allclose(store.series("train/lr"), want, rtol=1e-6, atol=1e-9)
    assert want[-1] == 0.0 and want[3] == 0.04 and 0 < want[4] < 0.04  # warm-down from step 21
    loss = store.series("train/loss")
    assert math.isnan(loss[0]) and loss[-1] < min(loss[1], math.log(1024))  # it learns (zero head: ln V at 0)
    meta = json.loads((a / "run.json").read_text())
    assert meta["precision"] == "fp32" and meta["d_vocab"] == meta["model_d_vocab"] == 1024
    assert "pronoun_gender_ref" in store.families() and len(store.families()) == 15


def test_resume_equals_uninterrupted(runs):
    _, a, b, _ = runs
    sa, sb = RunStore(a / "store.zarr"), RunStore(b / "store.zarr")
    assert sb.attrs["complete"] and list(sa.steps()) == list(sb.steps())
    for key in ["train/loss", "train/lr", "pronoun_gender_ref/logp_correct", "det_an_choice/logp_distractor"]:
        np.testing.assert_array_equal(sa.series(key), sb.series(key))
    wa, wb = load_model(a).state_dict(), load_model(b).state_dict()
    assert wa.keys() == wb.keys() and any(k.startswith("ve_lambdas") for k in wa)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_scores_equal_a_fresh_forward_of_the_saved_weights(runs, corpora):
    cfg, a, _, _ = runs
    from runner.data.corpora import load_corpus
    from runner.scoring import battery_for, training_bos

    c = load_corpus(corpora[0] / "kjv")
    tok = c.tokenizer
    items = [it for it in battery_for(cfg) if it.family == "pronoun_gender_ref"]
    enc = encode_battery(items, tok, training_bos(tok, c.rows, c.manifest), cfg.model.n_ctx, pad_id=c.pad_id)
    lpc, lpd = continuation_logprobs(load_model(a, 20), enc)
    store = RunStore(a / "store.zarr")
    row = list(store.steps()).index(20)
    np.testing.assert_allclose(store.series("pronoun_gender_ref/logp_correct")[row], lpc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(store.series("pronoun_gender_ref/logp_distractor")[row], lpd, rtol=1e-5, atol=1e-5)


def test_capture_works_on_the_preset(runs):
    from mech.capture import capture_run, open_capture
    from mech.names import hook_name

    _, a, _, _ = runs
    out = capture_run(a, steps=[10, 30], families=["pronoun_gender_ref"], batch_size=16)
    assert out["families"]["pronoun_gender_ref"]["steps"] == [10, 30]
    ds = open_capture(a, "pronoun_gender_ref")
    assert ds[hook_name("resid_post")].dims == ("step", "item", "layer", "d_model")
    assert ds.sizes["layer"] == 4 and ds.sizes["item"] == 48
    pattern = ds[hook_name("pattern")].sel(step=30).values.astype(np.float32)
    assert np.all(np.isfinite(pattern)) and np.allclose(pattern.sum(-1), 1.0, atol=2e-3)


class _Dtypes(TrainCallback):
    """The dtype of ``blocks.0.attn.hook_z`` in every forward: training steps and scoring."""

    def __init__(self) -> None:
        self.seen: set[torch.dtype] = set()

    def on_start(self, ctx):
        ctx.model.add_hook("blocks.0.attn.hook_z", lambda z, hook: self.seen.add(z.dtype))

    def on_close(self, ctx):
        ctx.model.reset_hooks()


@pytest.mark.parametrize("arch", ["tl", "nanochat"])
def test_schedule_pieces_and_bf16_autocast_on_the_builtin_world(tmp_path, arch):
    """Muon, per-group lrs, the warm-down, wd decay and a soft-cap on the built-in world's model
    (and the nanochat one); precision bf16 forced on CPU runs DeepSpeed's torch autocast: training
    forwards in bf16, scoring in fp32, weights fp32."""
    from tests.helpers import tiny_run_config

    act = "relu2" if arch == "nanochat" else "gelu"
    cfg = tiny_run_config(model={"arch": arch, "logit_soft_cap": 15.0, "act_fn": act},
                          optim={"name": "muon", "matrix_lr": 0.02, "embed_lr": 0.01, "warmup_steps": 2,
                                 "warmdown_frac": 0.5, "weight_decay": 0.1, "weight_decay_groups": ["matrix"],
                                 "weight_decay_schedule": "linear"},
                          train={"steps": 20, "precision": "bf16"}, schedule={"every": 10})
    dtypes = _Dtypes()
    run = train_run(cfg, tmp_path, progress=False, log=lambda *_: None, callbacks=[dtypes])
    store = RunStore(run / "store.zarr")
    assert store.attrs["complete"] and json.loads((run / "run.json").read_text())["precision"] == "bf16"
    assert dtypes.seen == {torch.bfloat16, torch.float32}
    assert all(p.dtype == torch.float32 for p in load_model(run).parameters())
    np.testing.assert_allclose(store.series("train/lr"), [0.02 * lr_factor(cfg.optim, s, 20) for s in (0, 10, 20)],
                               rtol=1e-6)
    loss = store.series("train/loss")
    assert np.isfinite(loss[1:]).all() and loss[2] < loss[1]
