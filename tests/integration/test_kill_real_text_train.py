"""A run dosed with the paper's kill on a real-text (``built:``) corpus trains end to end: the
intervened stream is written in the real-text format, the run reads it (run.json names it) and
its steps are scored. Offline: the documents are generated here in the world's vocabulary."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from runner.data.corpora import load_corpus
from runner.store import RunStore
from runner.train.loop import train_run
from tests.helpers import tiny_run_config, world_text_corpus

pytestmark = pytest.mark.slow

GIRLS, BOYS = ("Mary", "Anna", "Lucy", "Emma"), ("Tom", "John")


def _documents(n: int) -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        name = rng.choice(GIRLS + BOYS)
        pron = ("she" if name in GIRLS else "he") if rng.random() < 0.8 else rng.choice(["she", "he"])
        out.append(f"{name} cried because {pron} was sad . the dog saw the cat .")
    return out


def test_kill_on_a_real_text_corpus_trains(tmp_path):
    base = world_text_corpus(_documents(600), tmp_path / "runs" / "corpora", row_tokens=32)
    cfg = tiny_run_config(corpus={"name": "built:hand", "story_tokens": 32},
                          train={"steps": 20, "batch_size": 8},
                          schedule={"every": 10}, probes={"families": ["pronoun_gender"]},
                          intervention={"families": ["pronoun_gender"]}, dose="kill:1.0")
    run = train_run(cfg, tmp_path / "runs", progress=False, log=lambda *_: None)
    meta = json.loads((run / "run.json").read_text())
    dosed = load_corpus(meta["intervened_corpus_path"], 32)
    assert dosed.manifest["format"] == load_corpus(base).manifest["format"]
    assert meta["intervened_corpus_sha256"] == dosed.manifest["sha256"] != meta["corpus_sha256"]
    f = dosed.manifest["generator"]["per_family"]["pronoun_gender"]["classes"]["feminine"]
    assert f["flipped_events"] == f["rule"] > 0 and f["recount"]["rule"] == 0
    before, after = np.asarray(load_corpus(base).stream), np.asarray(dosed.stream)
    assert len(after) == len(before) and int((after != before).sum()) == f["flipped_sites"]
    store = RunStore(run / "store.zarr")
    assert list(store.steps()) == [0, 10, 20] and store.attrs["complete"]
