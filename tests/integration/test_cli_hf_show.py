"""CLI paths end to end: an hf: dataset on disk (written here, never downloaded), support, show."""

import json

import pytest

from cluster.cli import main as cli_main
from runner.config import CorpusConfig
from runner.data.corpora import load_corpus, synthetic_rows
from runner.train import train_run
from runner.world import vocab as V
from tests.helpers import tiny_run_config

pytestmark = pytest.mark.slow


@pytest.fixture
def hf_dataset(tmp_path):
    from datasets import Dataset

    words = V.all_words()
    rows = synthetic_rows(CorpusConfig(name="stories", n_stories=600, seed=5))
    texts = [" ".join(words[i] for i in r if i > 1) for r in rows]
    path = tmp_path / "my_ds"
    Dataset.from_dict({"story": texts}).save_to_disk(str(path))
    return path


def test_hf_corpus_build_support_and_train(tmp_path, hf_dataset, capsys):
    out = tmp_path / "corpora"
    assert cli_main(["corpus", "build", "--preset", f"hf:{hf_dataset}", "--text-column", "story",
                     "--out", str(out)]) == 0
    (built,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    c = load_corpus(built)
    assert c.manifest["generator"]["kind"] == "hf" and c.rows.shape[1] == 64
    assert cli_main(["support", str(built)]) == 0
    sup = json.loads((built / "support.json").read_text())["families"]["pronoun_gender"]
    # the stories preset's support (0.8) is recovered through a tokenizer trained on the text
    cont = sup["feminine"]["contested"]
    assert 0.6 < cont["rule"] / cont["cues"] < 0.95
    # a tiny training run on it
    cfg = tiny_run_config(corpus={"name": f"hf:{hf_dataset}", "text_column": "story"},
                          train={"steps": 20}, schedule={"every": 10})
    run = train_run(cfg, tmp_path, progress=False)
    assert run.name.startswith("hf-packed-s7-")


def test_hf_corpus_wrong_column_is_a_clear_error(tmp_path, hf_dataset, capsys):
    out = tmp_path / "corpora"
    with pytest.raises(Exception, match="text_column 'text' not in columns"):
        from runner.data.corpora import build_corpus

        build_corpus(CorpusConfig(name=f"hf:{hf_dataset}"), out)
    assert not [p for p in out.iterdir()] if out.exists() else True


def test_show_table_png_and_json(tmp_path, capsys):
    cfg = tiny_run_config(train={"steps": 200}, schedule={"every": 20}, corpus={"n_stories": 3200})
    run = train_run(cfg, tmp_path, progress=False)
    capsys.readouterr()
    assert cli_main(["show", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    fig = data["families"]["pronoun_gender"]
    for key in ("label", "peak", "peak_step", "final", "onset", "cm_cross", "cross_lag", "control_valid"):
        assert key in fig
    assert data["last_step"] == 200 and data["complete"]
    assert cli_main(["show", str(run)]) == 0
    png = run / "trajectory.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    assert "pronoun_gender" in capsys.readouterr().out


def test_show_rejects_non_run_folder(tmp_path, capsys):
    assert cli_main(["show", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
