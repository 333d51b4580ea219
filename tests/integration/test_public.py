"""Public checkpoint series offline: tiny random GPT-NeoX models saved at several "revisions"
(with a locally trained tokenizer), scored on a real local Ray with the reference battery, through
both sources (a local mirror and a pre-filled Hugging Face cache with HF_HUB_OFFLINE=1)."""

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SIZES = {"neox-s": 16, "neox-m": 32, "neox-l": 48}
REVS = ["step0", "step100", "step200", "step300", "step400"]
FAMILIES = ["det_an_choice", "plural_was_were", "a_an_adjective"]


def _tokenizer(battery):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for line in open(battery):
        o = json.loads(line)
        texts += [o["prefix"] + o["correct"], o["prefix"] + o["distractor"]]
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def _save(folder: Path, hidden: int, seed: int, tok) -> None:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    GPTNeoXForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def suite(tmp_path_factory, request):
    battery = Path(__file__).resolve().parents[3] / "shared" / "reference" / "batteries" / "rvp4.jsonl"
    if not battery.exists():
        pytest.skip(f"reference battery missing at {battery}")
    root = tmp_path_factory.mktemp("suite")
    tok = _tokenizer(battery)
    mirror, cache = root / "mirror", root / "hf"
    for i, (model, hidden) in enumerate(SIZES.items()):
        for j, rev in enumerate(REVS):
            _save(mirror / model / rev, hidden, 100 * i + j, tok)
    # the same checkpoints as a Hugging Face cache: refs/<revision> -> commit -> snapshots/<commit>/
    import shutil

    for model in SIZES:
        repo = cache / f"models--EleutherAI--{model}"
        (repo / "refs").mkdir(parents=True)
        for j, rev in enumerate(REVS):
            commit = f"{j:x}" * 40
            shutil.copytree(mirror / model / rev, repo / "snapshots" / commit)
            (repo / "refs" / rev).write_text(commit)
    return battery, mirror, cache


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_local_mirror_three_models_five_revisions_on_ray(suite, tmp_path, offline):
    import ray

    from cluster.public import run_public
    from cluster.sweep import init_ray
    from runner.analysis.prereg import Prereg, unregistered
    from runner.analysis.verdicts import verdict
    from runner.report.html import write_report

    battery, mirror, _ = suite
    init_ray(num_cpus=2)
    try:
        res = run_public(list(SIZES), ",".join(REVS), f"local:{mirror}", battery, tmp_path / "pub",
                         families=FAMILIES, progress=False)
    finally:
        ray.shutdown()
    assert res["scored"] == 15 and not res["failed"] and len(res["runs"]) == 3
    meta = json.loads((tmp_path / "pub" / "neox-m" / "run.json").read_text())
    assert [r["step"] for r in meta["revisions"]] == [0, 100, 200, 300, 400]
    assert all(r["commit"].startswith("sha256:") for r in meta["revisions"])
    locked = unregistered().model_copy(update={"prereg": Prereg(classifier={"start_step": 0})})
    v = verdict(tmp_path / "pub", locked)
    xm = v["cross_model"]
    assert set(xm) == set(FAMILIES)
    rows = xm["det_an_choice"]["models"]
    assert [r["model"] for r in rows] == ["neox-s", "neox-m", "neox-l"]  # ordered by measured size
    assert rows[0]["n_params"] < rows[1]["n_params"] < rows[2]["n_params"]
    assert all(r["depth"] == pytest.approx(r["peak"] - r["final"]) for r in rows)
    page = write_report(tmp_path / "pub", locked)
    html = page.read_text()
    assert "Public checkpoints" in html and "neox-l" in html
    assert (page.parent / "cross_model.png").stat().st_size > 1000
    # rerun: everything already scored is skipped
    init_ray(num_cpus=2)
    try:
        again = run_public(list(SIZES), ",".join(REVS), f"local:{mirror}", battery, tmp_path / "pub",
                           families=FAMILIES, progress=False)
    finally:
        ray.shutdown()
    assert again["scored"] == 0 and again["skipped"] == 15


def test_hub_source_is_the_same_code_with_a_cache_offline(suite, tmp_path, offline, monkeypatch):
    from mech.public import PublicError, Source, assemble_run, score_revision

    battery, mirror, cache = suite
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for rev in REVS[:3]:
        meta = score_revision("neox-s", rev, "hub", str(battery), str(tmp_path))
        assert meta["commit"] == f"{REVS.index(rev):x}" * 40  # pinned by the snapshot's commit
    local = score_revision("neox-s", "step100", f"local:{mirror}", str(battery), str(tmp_path / "local"))
    import numpy as np

    a, b = np.load(tmp_path / "neox-s" / "revisions" / "step100.npz"), \
        np.load(tmp_path / "local" / "neox-s" / "revisions" / "step100.npz")
    assert np.allclose(a["lp_correct"], b["lp_correct"]) and local["n_params"] > 0
    run = assemble_run(tmp_path, "neox-s", str(battery))
    assert (run / "summary.json").exists()
    with pytest.raises(PublicError, match="neox-s @ step999"):
        Source("hub").resolve("neox-s", "step999")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_public_checkpoints_are_scored_without_a_start_token_by_default(suite, tmp_path, offline):
    """The paper's convention (issue 15): no BOS unless asked; the setting is recorded, a revision
    scored with the other setting is scored again, and a model's revisions must agree."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from mech.public import PublicError, assemble_run, score_revision
    from runner.store import RunDir
    from runner.world.batteries import read_battery

    battery, mirror, _ = suite
    src, out = f"local:{mirror}", str(tmp_path)
    meta = score_revision("neox-s", "step100", src, str(battery), out)
    assert meta["bos"] is False and meta["bos_id"] is None
    folder = mirror / "neox-s" / "step100"
    tok, model = AutoTokenizer.from_pretrained(folder), GPTNeoXForCausalLM.from_pretrained(folder).eval()
    items = read_battery(battery)[::200]
    with np.load(tmp_path / "neox-s" / "revisions" / "step100.npz") as z:
        without = z["lp_correct"].copy()
    for i, it in zip(range(0, 3156, 200), items):  # the HF model itself on prefix + answer, nothing before
        pre, cont = (tok(t, add_special_tokens=False).input_ids for t in (it.prefix, it.correct))
        with torch.no_grad():
            lsm = model(torch.tensor([pre + cont])).logits.log_softmax(-1)[0]
        want = sum(float(lsm[len(pre) + j - 1, c]) for j, c in enumerate(cont))
        assert without[i] == pytest.approx(want, abs=1e-4)
    meta = score_revision("neox-s", "step100", src, str(battery), out, bos=True)  # scored again, with it
    assert meta["bos"] is True and meta["bos_id"] == tok.bos_token_id
    with np.load(tmp_path / "neox-s" / "revisions" / "step100.npz") as z:
        assert np.abs(z["lp_correct"] - without).max() > 1e-3
    score_revision("neox-s", "step0", src, str(battery), out)  # without: the two disagree
    with pytest.raises(PublicError, match="scored with and without a start token"):
        assemble_run(tmp_path, "neox-s", str(battery))
    score_revision("neox-s", "step0", src, str(battery), out, bos=True)
    run = assemble_run(tmp_path, "neox-s", str(battery))
    assert json.loads((run / "run.json").read_text())["bos"] is True
    assert json.loads((run / "config.json").read_text())["bos"] is True
    st = RunDir(run).open_store()
    assert st.attrs["bos"] is True and "lnd_conflict_heldout" in st.metrics("det_an_choice")
