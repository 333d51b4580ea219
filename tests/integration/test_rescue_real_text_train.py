"""A run dosed with the paper's rescue on a real-text (``built:``) corpus trains end to end: the
rescued stream is written in the real-text format (token-matched: same length as the base), the
run reads it (run.json names it) and its steps are scored. Offline: the documents are generated
here in the world's vocabulary."""

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
        if rng.random() < 0.5:  # a neutral document: no name, no pronoun
            out.append(f"the {rng.choice(['dog', 'cat', 'cow'])} saw the {rng.choice(['fish', 'sheep'])} .")
            continue
        name = rng.choice(GIRLS + BOYS)
        pron = ("she" if name in GIRLS else "he") if rng.random() < 0.8 else rng.choice(["she", "he"])
        out.append(f"{name} cried because {pron} was sad . the dog saw the cat .")
    return out


def test_rescue_on_a_real_text_corpus_trains(tmp_path):
    base = world_text_corpus(_documents(600), tmp_path / "runs" / "corpora", row_tokens=32)
    cfg = tiny_run_config(corpus={"name": "built:hand", "story_tokens": 32},
                          train={"steps": 20, "batch_size": 8},
                          schedule={"every": 10}, probes={"families": ["pronoun_gender"]},
                          intervention={"families": ["pronoun_gender"], "reference": "0.01"}, dose="rescue:1")
    assert cfg.intervention.reference == "0.01"
    run = train_run(cfg, tmp_path / "runs", progress=False, log=lambda *_: None)
    meta = json.loads((run / "run.json").read_text())
    dosed = load_corpus(meta["intervened_corpus_path"], 32)
    assert dosed.manifest["format"] == load_corpus(base).manifest["format"]
    assert meta["intervened_corpus_sha256"] == dosed.manifest["sha256"] != meta["corpus_sha256"]
    g = dosed.manifest["generator"]
    f = g["per_family"]["pronoun_gender"]
    n = f["events_per_class"]
    assert n > 0 and f["injected_events"]["feminine"] == {"rule": n, "prior": 0}
    assert f["after"]["rule"] == f["before"]["rule"] + n
    assert len(np.asarray(dosed.stream)) == len(np.asarray(load_corpus(base).stream))
    assert g["removed"]["tokens"] == g["injected_tokens"]
    store = RunStore(run / "store.zarr")
    assert list(store.steps()) == [0, 10, 20] and store.attrs["complete"]


def test_a_windowed_whole_dose_rescue_on_real_text_reads_the_dose_only_in_its_window(tmp_path):
    """The paper's timing amendment on real text: with the whole dose in steps 10-20 of 20 the
    stream carries twice the uniform density, and the run's batches hold injected documents
    (rescue cues) only inside the window."""
    from interventions.textrescue import lexicon_for
    from runner.train.loop import _streams
    from runner.world.rules import RULES

    world_text_corpus(_documents(600), tmp_path / "runs" / "corpora", row_tokens=32)
    cfg = tiny_run_config(corpus={"name": "built:hand", "story_tokens": 32},
                          train={"steps": 20, "batch_size": 8},
                          schedule={"every": 10}, probes={"families": ["pronoun_gender"]},
                          intervention={"families": ["pronoun_gender"], "reference": "0.01",
                                        "start_step": 10, "end_step": 20, "whole_dose": True}, dose="rescue:1")
    run = train_run(cfg, tmp_path / "runs", progress=False, log=lambda *_: None)
    meta = json.loads((run / "run.json").read_text())
    assert meta["intervention_window"] == [10, 20]
    corpus, dosed = load_corpus(meta["corpus_path"], 32), load_corpus(meta["intervened_corpus_path"], 32)
    assert dosed.manifest["generator"]["per_family"]["pronoun_gender"]["whole_dose_factor"] == 2.0
    cues = lexicon_for(RULES.get("pronoun_gender"), "t").cue_words()
    cue_ids = {i for w in cues for i in corpus.tokenizer.encode(w).ids}
    assert cue_ids and not np.isin(np.asarray(corpus.stream), list(cue_ids)).any()
    streams = _streams(cfg, corpus, dosed, int(meta["n_params"]))
    hits = {s: bool(np.isin(streams.batch(s), list(cue_ids)).any()) for s in range(20)}
    assert not any(hits[s] for s in range(10)) and any(hits[s] for s in range(10, 20))
    assert RunStore(run / "store.zarr").attrs["complete"]
