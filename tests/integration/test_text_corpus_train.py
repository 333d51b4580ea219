"""Real text end to end, offline: a hub dataset read from a pre-filled ``datasets`` cache
(HF_HUB_OFFLINE), the CLI build with a trained BPE, and `ungrok train` on it for a few steps;
budgets the corpus cannot meet are one line, before any file of the run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cluster.cli import main as cli_main
from runner.store import RunStore

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "kjv_sample.jsonl.gz"
COMMIT = "a" * 40


def _docs(n: int) -> list[str]:
    return [json.loads(line)["text"] for line in gzip.open(SAMPLE, "rt")][:n]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """``someone/TinyText`` in a temporary datasets cache, laid out as ``load_dataset`` leaves a
    hub dataset (``<owner>___<name>/<config>/<version>/<commit>/``), and the hub offline."""
    import datasets
    import datasets.config as dc
    from datasets.packaged_modules.generator.generator import Generator

    cache = tmp_path / "hf_datasets"
    texts = _docs(40)

    def gen():
        for i, t in enumerate(texts):
            yield {"story": t, "n": i}

    features = datasets.Features({"story": datasets.Value("string"), "n": datasets.Value("int64")})
    Generator(cache_dir=str(cache), dataset_name="TinyText", repo_id="someone/TinyText", config_name="default",
              hash=COMMIT, generator=gen, features=features).download_and_prepare()
    # a config made from generator kwargs gets a suffixed folder; a hub dataset's is its config name
    (built,) = (cache / "someone___tiny_text").iterdir()
    built.rename(built.parent / "default")
    monkeypatch.setattr(dc, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(dc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return texts


def test_hub_dataset_from_the_offline_cache(tmp_path, hub_cache, capsys):
    out = tmp_path / "corpora"
    assert cli_main(["corpus", "build", "--source", "hf:someone/TinyText", "--text-column", "story",
                     "--tokenizer", "bpe:500", "--name", "tiny", "--out", str(out)]) == 0
    m = json.loads((out / "tiny" / "manifest.json").read_text())
    assert m["source"]["kind"] == "hf-hub" and m["source"]["revision"] == COMMIT and m["source"]["offline"]
    assert m["n_docs"] == 40 and m["vocab_size"] == 500
    assert m["n_text_bytes"] == sum(len(t.encode()) for t in hub_cache)
    # the wrong column, and a dataset that is not cached: one line each, nothing written
    capsys.readouterr()
    assert cli_main(["corpus", "build", "--source", "hf:someone/TinyText", "--name", "t2", "--out", str(out)]) == 2
    assert "text column 'text' not in columns ['n', 'story']" in capsys.readouterr().err
    assert cli_main(["corpus", "build", "--source", "hf:someone/Missing", "--name", "t3", "--out", str(out)]) == 2
    assert "not in the local datasets cache" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in out.iterdir()) == ["tiny"]


def test_build_and_train_on_real_text(tmp_path, capsys):
    out = tmp_path / "runs"
    corpora = out / "corpora"
    assert cli_main(["corpus", "build", "--source", f"text:{SAMPLE}", "--tokenizer", "bpe:1024", "--name", "kjv",
                     "--out", str(corpora), "--workers", "2"]) == 0
    m = json.loads((corpora / "kjv" / "manifest.json").read_text())
    assert m["n_docs"] == 384 and m["vocab_size"] == 1024 and m["build"]["shards"] == 1
    capsys.readouterr()
    # a budget this corpus cannot meet: one line naming the fix, no run folder
    assert cli_main(["train", "--corpus", "kjv", "--steps", "100000", "--out", str(out), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "budget 'packed' needs 3,200,000 fresh rows" in err and "--budget dn5" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["corpora"]
    # a few steps: the model's vocabulary is the corpus tokenizer's, probes start with <|endoftext|>
    assert cli_main(["train", "--corpus", "kjv", "--steps", "20", "--out", str(out), "--no-progress"]) == 0
    (run,) = [p for p in out.iterdir() if p.name.startswith("kjv-packed-s42-")]
    meta = json.loads((run / "run.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    assert meta["d_vocab"] == 1024 and meta["corpus_sha256"] == m["sha256"]
    assert cfg["corpus"] == {**cfg["corpus"], "name": "built:kjv", "sha256": m["sha256"], "story_tokens": 64}
    store = RunStore(run / "store.zarr")
    assert list(store.steps()) == [0, 20] and store.attrs["complete"]
    assert store.attrs.get("bos_id", 0) == 0


def test_legacy_hf_folder_with_the_default_budget_is_one_line(tmp_path, capsys):
    from datasets import Dataset

    from runner.config import CorpusConfig
    from runner.data.corpora import synthetic_rows
    from runner.world import vocab as V

    words = V.all_words()  # stories of the world's words: its probes are in the trained vocabulary
    rows = synthetic_rows(CorpusConfig(name="stories", n_stories=300, seed=5))
    Dataset.from_dict({"text": [" ".join(words[i] for i in r if i > 1) for r in rows]}).save_to_disk(
        str(tmp_path / "ds"))
    out = tmp_path / "runs"
    assert cli_main(["train", "--corpus", f"hf:{tmp_path / 'ds'}", "--out", str(out), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: budget 'packed' needs 160,000 fresh rows" in err and "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name != "corpora"]


def test_worker_pool_gives_the_same_stream_as_one_process(tmp_path):
    from runner.data.textcorpus import TextCorpusSpec, build_text_corpus

    spec = TextCorpusSpec(name="kjv", source=f"text:{SAMPLE}", tokenizer="bpe:800")
    one = build_text_corpus(spec, tmp_path / "one", workers=1, block_bytes=100_000)
    pool = build_text_corpus(spec, tmp_path / "pool", workers=2, block_bytes=100_000)
    assert (one / "tokens.npy").read_bytes() == (pool / "tokens.npy").read_bytes()
    m = json.loads((pool / "manifest.json").read_text())
    assert m["build"]["shards"] > 10 and m["n_docs"] == 384
    capped = build_text_corpus(spec.model_copy(update={"name": "cap", "max_tokens": 123_457}), tmp_path / "pool",
                               workers=2, block_bytes=100_000)
    mc = json.loads((capped / "manifest.json").read_text())
    assert mc["n_tokens"] == 123_457 and mc["truncated"] and mc["sha256"] != m["sha256"]
    assert sorted(p.name for p in capped.iterdir()) == ["manifest.json", "tokenizer.json", "tokens.npy"]
