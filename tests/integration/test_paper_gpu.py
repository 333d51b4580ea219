"""The paper preset on a CUDA device: bf16 autocast through DeepSpeed (precision ``auto``), the
paper-shape model stepping at 32 x 2,048 tokens, and the throughput file ``ungrok plan`` reads.
Skipped, with the reason, on machines without CUDA."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from runner.grid import RUN_PRESETS
from runner.store import RunStore
from runner.train import TrainCallback, train_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device: bf16 autocast and the paper-shape steps run only on a GPU "
                              "(none on this machine)"),
]
REPO = Path(__file__).resolve().parents[2]


class _Seen(TrainCallback):
    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def on_start(self, ctx):
        self.device = next(ctx.model.parameters()).device
        ctx.model.add_hook("blocks.0.attn.hook_z", lambda z, hook: self.dtypes.add(z.dtype))

    def on_close(self, ctx):
        ctx.model.reset_hooks()


def test_preset_auto_precision_is_bf16_autocast_on_cuda(tmp_path):
    from runner.config import RunConfig

    sec = RUN_PRESETS.get("paper").sections_for("stories")
    sec["model"].update(d_model=64, n_heads=2, d_mlp=256, n_ctx=128, d_vocab=None)
    sec["corpus"] = {"name": "stories", "n_stories": 4000, "story_tokens": 128}
    sec["train"].update(steps=40, batch_size=16, budget="packed", seed=1)
    sec["schedule"] = {"every": 20}
    sec["probes"] = {"n_per_cell": 8, "n_neutral": 4}
    cfg = RunConfig.model_validate(sec)
    seen = _Seen()
    run = train_run(cfg, tmp_path, progress=False, log=lambda *_: None, callbacks=[seen])
    assert seen.device.type == "cuda" and json.loads((run / "run.json").read_text())["precision"] == "bf16"
    assert seen.dtypes == {torch.bfloat16, torch.float32}  # training forwards bf16, scoring fp32
    loss = RunStore(run / "store.zarr").series("train/loss")
    assert np.isfinite(loss[1:]).all() and loss[2] < loss[1] < math.log(1000)


def test_paper_shape_trains_and_measures_throughput(tmp_path):
    out = tmp_path / "throughput.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "paper_throughput.py"), "--steps", "10", "--warmup",
                        "3", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(out.read_text())
    assert m["params"] == 11_534_340 and m["batch"] == 32 and m["seq_len"] == 2048 and m["precision"] == "bf16"
    assert m["tokens_per_second"] > 0 and (m["mfu"] is None or 0 < m["mfu"] < 1)
    assert m["peak_memory_gib"] < 70
    print(f"paper model on {m['device']}: {m['tokens_per_second']:,.0f} tokens/s, MFU {m['mfu']}, "
          f"peak memory {m['peak_memory_gib']:.1f} GiB")
    from runner.train.plan import Throughput

    assert "measured on" in Throughput.measured(out).source
