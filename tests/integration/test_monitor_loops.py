"""The live monitor in ungrok's own DeepSpeed trainer and in a Hugging Face Trainer (offline)."""

import pytest

from runner.train.monitor import Monitor, TrendConfig, frozen_probe_set, hf_callback
from runner.world import vocab as V
from runner.world.rules import RULES

pytestmark = pytest.mark.slow


def test_hf_trainer_callback_observes_every_n_steps(tmp_path):
    import torch
    from datasets import Dataset
    from transformers import (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        Trainer,
        TrainingArguments,
    )

    from runner.config import CorpusConfig
    from runner.data.corpora import synthetic_rows, world_tokenizer
    from runner.scoring import aggregate, continuation_logprobs, encode_battery

    torch.manual_seed(0)
    wt = world_tokenizer()
    rows = synthetic_rows(CorpusConfig(name="web", n_stories=64, seed=1))
    ds = Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()})
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=wt.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=64))
    items = frozen_probe_set(RULES.get("pronoun_gender").battery(8, 2), ["pronoun_gender"], n=8)
    mon = Monitor(items, wt, wt.token_to_id(V.BOS), 64, pad_id=wt.token_to_id(V.PAD),
                  trend=TrendConfig(every=2, window=3, horizon=10**6, min_step=0), log=lambda *_: None)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, seed=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[hf_callback(mon)]).train()
    h = mon.history["pronoun_gender"]
    assert h["step"] == [2, 4, 6]
    # the last observation is the trained model's CM on the frozen probes, recomputed here
    enc = encode_battery(items, wt, wt.token_to_id(V.BOS), 64, pad_id=wt.token_to_id(V.PAD))
    m = aggregate(items, *continuation_logprobs(model, enc))
    assert h["cm"][-1] == pytest.approx(m["pronoun_gender/cm"], abs=1e-5)
    assert len({round(c, 6) for c in h["cm"]}) == 3  # the model moved between observations


def test_ungrok_trainer_watch_records_warnings_as_store_events(tmp_path):
    from runner.store import open_run_store
    from runner.train import train_run
    from runner.train.monitor import monitor_callback
    from tests.helpers import tiny_run_config

    got = []
    cfg = tiny_run_config(train={"steps": 60})
    # horizon and confidence loose enough that a falling CM in a 60-step run is flagged; what is
    # checked is the plumbing: warnings from the live monitor equal the store's events
    watch = monitor_callback(("pronoun_gender",), on_warning=got.append,
                             trend=TrendConfig(every=10, window=3, horizon=10**6, confidence=0.5, min_step=0))
    run = train_run(cfg, tmp_path, progress=False, callbacks=[watch])
    store = open_run_store(run)
    events = store.attrs.get("events", [])
    assert events == got
    assert all(e["family"] == "pronoun_gender" and e["projected_crossing"] > e["step"] for e in events)
    # what the monitor observed every 10 steps equals CM recomputed from the stored per-item
    # log-probs on its frozen probe set, at the steps the run also scored

    h = store.attrs["monitor"]["pronoun_gender"]
    assert h["step"] == list(range(0, 61, 10))
    fam = store.g["pronoun_gender"]
    ids = list(fam["item"][:])
    cond, split = fam["condition"][:], fam["split"][:]
    conflict = [i for i, (c, s) in enumerate(zip(cond, split)) if c == "conflict" and s == "heldout"][:64]
    diff = store.series("pronoun_gender/logp_correct") - store.series("pronoun_gender/logp_distractor")
    for row, step in enumerate(store.steps()):
        assert h["cm"][h["step"].index(int(step))] == pytest.approx(diff[row, conflict].mean(), abs=1e-4)
    assert len(ids) == diff.shape[1]
