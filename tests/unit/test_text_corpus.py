"""Real-text corpora: sources (files, datasets folders), tokenizers (trained BPE, files), the
sharded build (deterministic, capped, atomic), loading, bad input, and the configs that name them.
Offline: the text is the shipped KJV sample (tests/data/README.md) or written here."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from runner.config import CorpusConfig, RunConfig, config_hash
from runner.data.corpora import CorpusError, build_corpus, load_corpus
from runner.data.shards import assemble, tokenize_to_shards
from runner.data.sources import SourceRequest, open_source
from runner.data.textcorpus import TextCorpusSpec, build_text_corpus
from runner.data.tokenizers import byte_level_bpe, check_tokenizer_spec, load_tokenizer_file

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "kjv_sample.jsonl.gz"
REFERENCE_TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "tokenizers"


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return [json.loads(line)["text"] for line in gzip.open(SAMPLE, "rt")]


@pytest.fixture
def small(tmp_path, docs) -> Path:
    """The first 60 chapters as a JSONL file (~270 KB): quick to train a BPE on."""
    path = tmp_path / "src" / "small.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"text": d, "n": i}) + "\n" for i, d in enumerate(docs[:60])))
    return path


def spec(src: Path, **kw) -> TextCorpusSpec:
    return TextCorpusSpec(**{"name": "kjv", "source": f"text:{src}", "tokenizer": "bpe:600", **kw})


def test_sample_is_small_real_english(docs):
    assert SAMPLE.stat().st_size < 2 << 20 and len(docs) == 384
    assert docs[0].startswith("In the beginning God created the heaven and the earth.")
    assert sum(len(d) for d in docs) > 1_500_000


# ---- sources -----------------------------------------------------------------------------------
def test_files_in_sorted_order_jsonl_txt_and_gzip(tmp_path):
    (tmp_path / "b.txt").write_text("third doc\n<|endoftext|>\nfourth\ndoc\n")
    (tmp_path / "a.jsonl").write_text('{"text": "first"}\n\n{"text": "second"}\n')
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("fifth, one whole file\n")
    src = open_source(SourceRequest(f"text:{tmp_path}/*"))
    assert list(src.documents()) == ["first", "second", "third doc\n", "fourth\ndoc\n", "fifth, one whole file\n"]
    assert [Path(f["path"]).name for f in src.record["files"]] == ["a.jsonl", "b.txt", "c.txt.gz"]
    assert len(src.record["revision"]) == 64


@pytest.mark.parametrize("source, match", [
    ("text:/nonexistent/*.jsonl", "no file matches"),
    ("nope:x", "give hf:<hub name or datasets folder> or text:"),
    ("hf:./missing_folder", "no dataset folder"),
])
def test_bad_sources_name_the_fix(source, match):
    with pytest.raises(CorpusError, match=match):
        open_source(SourceRequest(source))


def test_jsonl_without_the_text_column(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"story": "x"}\n')
    with pytest.raises(CorpusError, match=r"a.jsonl:1: no text column 'text' \(found \['story'\]\); pass --text-col"):
        list(open_source(SourceRequest(f"text:{tmp_path}/a.jsonl")).documents())


def test_datasets_folder_source(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"story": ["one", "two"]}),
                 "valid": Dataset.from_dict({"story": ["three"]})}).save_to_disk(str(tmp_path / "ds"))
    src = open_source(SourceRequest(f"hf:{tmp_path / 'ds'}", text_column="story", split="valid"))
    assert list(src.documents()) == ["three"] and src.record["kind"] == "hf-folder"
    with pytest.raises(CorpusError, match=r"text column 'text' not in columns \['story'\]; pass --text-column"):
        open_source(SourceRequest(f"hf:{tmp_path / 'ds'}"))


# ---- tokenizers --------------------------------------------------------------------------------
def test_bpe_is_deterministic_byte_level_with_eot_first(docs):
    a, b = byte_level_bpe(700, docs[:40]), byte_level_bpe(700, docs[:40])
    assert a.to_str() == b.to_str() and a.get_vocab_size() == 700
    assert a.token_to_id("<|endoftext|>") == 0
    text = "Ruth said, “Whither thou goest, I will go” — naïve café 😊"
    assert a.decode(a.encode(text).ids) == text  # byte-level: nothing is unknown


@pytest.mark.parametrize("spec_, match", [
    ("bpe:10", "vocabulary size >= 258"),
    ("bpe:many", "vocabulary size"),
    ("/nonexistent/tokenizer.json", "no such file or folder"),
])
def test_bad_tokenizer_specs(spec_, match):
    with pytest.raises(CorpusError, match=match):
        check_tokenizer_spec(spec_)


def test_tokenizer_file_that_does_not_load(tmp_path):
    bad = tmp_path / "tok.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(CorpusError, match="does not load .*pass a `tokenizers` JSON file"):
        load_tokenizer_file(str(bad))
    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match="has no tokenizer.json"):
        load_tokenizer_file(str(tmp_path / "folder"))


def test_tokenizer_folder_and_eot_lookup(tmp_path, docs):
    tok = byte_level_bpe(400, docs[:5], eot="</s>")
    (tmp_path / "f").mkdir()
    tok.save(str(tmp_path / "f" / "tokenizer.json"))
    with pytest.raises(CorpusError, match="no end-of-text token '<|endoftext|>'; pass --eot-token"):
        load_tokenizer_file(str(tmp_path / "f" / "tokenizer.json"))
    (tmp_path / "f" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    chosen = load_tokenizer_file(str(tmp_path / "f"))  # the folder's eos token is the end of text
    assert chosen.eot_id == 0 and chosen.record["eot_token"] == "</s>"


@pytest.mark.parametrize("name", ["tinystories-bpe8192.json", "web-bpe8192.json"])
def test_the_papers_tokenizers_load(name):
    path = REFERENCE_TOKENIZERS / name
    if not path.exists():
        pytest.skip(f"reference tokenizer missing at {path}")
    chosen = load_tokenizer_file(str(path))
    assert chosen.vocab_size == 8192 and chosen.eot_id == 0


# ---- the build ---------------------------------------------------------------------------------
def test_build_is_deterministic_and_loads(tmp_path, small):
    a = build_text_corpus(spec(small), tmp_path / "a")
    b = build_text_corpus(spec(small), tmp_path / "b", block_bytes=50_000)  # other shard boundaries
    for f in ("tokens.npy", "tokenizer.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    m = json.loads((a / "manifest.json").read_text())
    assert m["format"] == "ungrok-text-stream-v1" and m["n_docs"] == 60 and not m["truncated"]
    assert m["bos_id"] == m["eot_id"] == 0 and m["pad_id"] == -1 and m["vocab_size"] == 600
    assert m["source"]["kind"] == "files" and len(m["tokenizer"]["sha256"]) == 64
    c = load_corpus(a, row_tokens=64)
    assert c.stream is not None and c.stream.shape[0] == m["n_tokens"] and c.rows.shape == (m["n_tokens"] // 64, 64)
    assert int((c.stream == 0).sum()) == 60 and c.stream[0] == 0  # <|endoftext|> before every document
    assert c.tokenizer.decode(c.stream[1:8].tolist()) in json.loads(small.read_text().splitlines()[0])["text"]
    assert c.pad_id == -1 and c.fill_id == 0
    assert build_text_corpus(spec(small), tmp_path / "a") == a  # the same spec: reused
    with pytest.raises(CorpusError, match="holds a corpus built from other settings"):
        build_text_corpus(spec(small, max_tokens=100), tmp_path / "a")


def test_token_cap_is_exact(tmp_path, small):
    p = build_text_corpus(spec(small, max_tokens=5_000), tmp_path, block_bytes=20_000)
    m = json.loads((p / "manifest.json").read_text())
    assert m["n_tokens"] == 5_000 and m["truncated"]
    full = build_text_corpus(spec(small, name="full"), tmp_path)
    assert np.array_equal(np.load(p / "tokens.npy"), np.load(full / "tokens.npy")[:5_000])
    assert not list(p.glob("shard*")) and not (p / "shards").exists()


def test_an_existing_tokenizer_file(tmp_path, small, docs):
    tok = byte_level_bpe(500, docs[100:140])
    tok.save(str(tmp_path / "tok.json"))
    p = build_text_corpus(spec(small, tokenizer=str(tmp_path / "tok.json")), tmp_path / "out")
    m = json.loads((p / "manifest.json").read_text())
    assert m["tokenizer"]["kind"] == "file" and m["vocab_size"] == 500


def _nothing_left(root: Path) -> bool:
    return not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("case", ["empty", "column", "tokenizer", "empty_docs"])
def test_bad_input_leaves_nothing_behind(tmp_path, case):
    src = tmp_path / "src.jsonl"
    out = tmp_path / "out"
    kw: dict = {}
    if case == "empty":
        src.write_text("")
        match = "holds no"
    elif case == "empty_docs":
        src.write_text('{"text": ""}\n{"text": ""}\n')
        match = "holds no text"
    elif case == "column":
        src.write_text('{"body": "hello there"}\n')
        match = "no text column 'text'"
    else:
        src.write_text('{"text": "hello there"}\n')
        (tmp_path / "bad.json").write_text("{ broken")
        kw["tokenizer"] = str(tmp_path / "bad.json")
        match = "does not load"
    with pytest.raises(CorpusError, match=match):
        build_text_corpus(spec(src, **kw), out)
    assert _nothing_left(out)


def test_spec_validation():
    with pytest.raises(ValueError, match="is a built-in corpus"):
        TextCorpusSpec(name="web", source="text:x")
    with pytest.raises(ValueError, match="use letters, digits"):
        TextCorpusSpec(name="../x", source="text:x")


def test_shards_in_order_and_cut(tmp_path, docs):
    tok = byte_level_bpe(400, docs[:10])
    stats = tokenize_to_shards(iter(docs[:30]), tok, 0, tmp_path, block_bytes=10_000, workers=1)
    assert len(stats.shards) > 3 and stats.n_docs == 30
    n, sha = assemble(stats, tmp_path / "s.npy", max_tokens=stats.n_tokens - 7)
    want = np.concatenate([np.r_[0, tok.encode(d).ids] for d in docs[:30]])[:n]
    got = np.load(tmp_path / "s.npy")
    assert n == stats.n_tokens - 7 and np.array_equal(got, want) and len(sha) == 64


# ---- configs that name a built corpus ----------------------------------------------------------
def test_built_corpus_config_names_runs_and_pins(tmp_path, small):
    rng = random.Random(0)
    sha = "%064x" % rng.getrandbits(256)
    c = CorpusConfig(name="built:kjv", sha256=sha)
    assert c.is_built and not c.is_world and c.label == "kjv" and c.dirname == "kjv"
    run = RunConfig(corpus=c, train={"steps": 10**6, "budget": "packed"})  # no n_stories check on real text
    assert run.run_id.startswith("kjv-packed-s42-")
    # the pin enters the hash only when set: the built-in corpora's ids are unchanged
    assert config_hash(CorpusConfig()) == config_hash(CorpusConfig(sha256=None))
    assert config_hash(CorpusConfig(name="built:kjv")) != config_hash(c)
    with pytest.raises(ValueError, match="unknown corpus 'kjv'"):
        CorpusConfig(name="kjv")
    with pytest.raises(ValueError, match="built:<name> names a corpus built with"):
        CorpusConfig(name="built:../x")
    with pytest.raises(CorpusError, match="no built corpus at .*ungrok corpus build --source"):
        build_corpus(c, tmp_path)
    p = build_text_corpus(spec(small), tmp_path)
    with pytest.raises(CorpusError, match="rebuilt since"):
        build_corpus(c, tmp_path)
    real = json.loads((p / "manifest.json").read_text())["sha256"]
    assert build_corpus(CorpusConfig(name="built:kjv", sha256=real), tmp_path) == p
