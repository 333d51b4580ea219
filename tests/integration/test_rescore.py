"""Any battery on any run (issue 16 C), on a real tiny run: the reference battery rvp4 attached
to training (every family at every checkpoint), ``rescore`` equal to it bit for bit, a killed
rescore resuming, the rescore read by show / verdict / report, a sweep-like folder rescored one
Ray task per run, and ``public`` loading an ungrok run folder.

The run trains on an ``hf:`` corpus (word-level tokenizer) made of the battery's own sentences,
so every rvp4 word is in its vocabulary: the point is the plumbing, not what the model learns.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main as cli_main
from runner.store import RunDir, RunStore, battery_view
from runner.world.batteries import read_battery, select, write_battery
from tests.helpers import REFERENCE_BATTERY, tiny_run_config

pytestmark = pytest.mark.slow
FAMILIES_OOD = ("det_an_choice", "plural_was_were")


@pytest.fixture(scope="module")
def rvp4():
    path = os.path.abspath(REFERENCE_BATTERY)
    if not os.path.exists(path):
        pytest.skip(f"reference battery not found at {path}")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, rvp4):
    """A 40-step run (checkpoints 0, 20, 40) scoring every rvp4 family during training."""
    from datasets import Dataset

    from runner.train import train_run

    root = tmp_path_factory.mktemp("rescore")
    texts = [it.prefix + ans for it in read_battery(rvp4) for ans in (it.correct, it.distractor)]
    Dataset.from_dict({"text": texts}).save_to_disk(str(root / "ds"))
    cfg = tiny_run_config(corpus={"name": f"hf:{root / 'ds'}", "story_tokens": 32}, probes={"battery": rvp4},
                          train={"steps": 40, "batch_size": 8}, schedule={"every": 20})
    run = train_run(cfg, root / "runs", progress=False, log=lambda *_: None)
    ood = write_battery([it for f in FAMILIES_OOD for it in select(read_battery(rvp4), family=f)],
                        root / "ood.jsonl")
    return run, ood


def _same(a: RunStore, b: RunStore, families) -> None:
    for f in families:
        for key in ("logp_correct", "logp_distractor", "acc_conflict_heldout", "lnd_agree_train", "cm"):
            np.testing.assert_array_equal(a.series(f"{f}/{key}"), b.series(f"{f}/{key}"), err_msg=f"{f}/{key}")


def test_every_rvp4_family_is_scored_at_every_checkpoint(trained, rvp4):
    run, _ = trained
    st = RunDir(run).open_store()
    fams = list(dict.fromkeys(it.family for it in read_battery(rvp4)))
    assert st.families() == fams and len(fams) == 15
    for f in fams:
        n = len(select(read_battery(rvp4), family=f))
        assert st.series(f"{f}/step").tolist() == [0, 20, 40]
        assert st.series(f"{f}/logp_correct").shape == (3, n)
        assert np.isfinite(st.series(f"{f}/lnd_conflict_heldout")).all()
        assert (st.item_labels(f, "n_tokens_correct") >= 1).all()
    a = st.attrs
    assert a["battery"]["name"] == "rvp4" and a["battery"]["sha256"] and a["complete"]
    assert a["bos"] is True and a["bos_id"] is not None  # hf: corpora start every document with <bos>
    assert a["tokens"] == {"n_items": 3156, "n_unknown_items": 0, "n_tied_items": 0}
    assert set(json.loads((run / "summary.json").read_text())["families"]) == set(fams)


def test_rescore_with_the_training_battery_equals_training_bit_for_bit(trained, rvp4):
    from runner.train.rescore import rescore_run

    run, _ = trained
    res = rescore_run(run, rvp4, name="rvp4-again", log=lambda *_: None)
    assert res["scored"] == 3 and res["skipped"] == 0 and res["bos"] is True
    st, again = RunDir(run).open_store(), RunStore(*RunDir(run).rescore_location("rvp4-again"))
    _same(st, again, st.families())
    np.testing.assert_array_equal(st.series("train/loss"), again.series("train/loss"))  # copied from training
    assert again.attrs["bos_id"] == st.attrs["bos_id"] and again.attrs["rescore_of"] == "/"


def test_a_killed_rescore_resumes_at_the_next_unscored_checkpoint(trained):
    from runner.train.rescore import rescore_run

    run, ood = trained

    def die_after_first(step):
        if step == 0:
            raise KeyboardInterrupt  # killed right after the first row was counted

    with pytest.raises(KeyboardInterrupt):
        rescore_run(run, ood, log=lambda *_: None, on_row=die_after_first)
    st = RunStore(*RunDir(run).rescore_location("ood"))
    assert st.n_complete == 1 and not st.attrs["complete"]
    arr = st.array("det_an_choice/logp_correct")  # a kill mid-append leaves an uncounted tail row
    arr.resize((2, arr.shape[1]))
    arr[1] = np.full(arr.shape[1], 123.0)
    scored = []
    res = rescore_run(run, ood, log=lambda *_: None, on_row=scored.append)
    assert scored == [20, 40] and res["skipped"] == 1
    st = RunStore(*RunDir(run).rescore_location("ood"))
    assert st.attrs["complete"] and st.steps().tolist() == [0, 20, 40] and st.families() == list(FAMILIES_OOD)
    _same(RunDir(run).open_store(), st, FAMILIES_OOD)  # the same items scored during training
    assert rescore_run(run, ood, log=lambda *_: None)["scored"] == 0  # complete: nothing to do


def test_a_second_rescore_of_the_same_battery_refuses_while_one_runs(trained):
    from runner._io import FolderBusy, hold_folder
    from runner.train.rescore import rescore_run

    run, ood = trained
    with hold_folder(RunDir(run).rescore_dir("ood"), "rescore"), pytest.raises(FolderBusy, match="in use by pid"):
        rescore_run(run, ood, log=lambda *_: None)


def test_show_verdict_and_report_read_a_rescored_battery(trained, tmp_path, capsys):
    from runner.analysis.prereg import unregistered
    from runner.analysis.verdicts import verdict

    run, ood = trained
    # a fresh name, so there is work whatever ran before in this module: plain progress lines, piped
    assert cli_main(["rescore", str(run), "--battery", str(ood), "--name", "ood-progress"]) == 0
    out = capsys.readouterr().out
    n = len(RunDir(run).weight_files())
    assert any(ln.startswith(f"progress: rescore {run.name}: {n}/{n} (100%)") and "done in" in ln
               for ln in out.splitlines()), out
    assert cli_main(["rescore", str(run), "--battery", str(ood)]) == 0
    capsys.readouterr()
    assert cli_main(["show", str(run), "--battery", "ood", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["families"]) == set(FAMILIES_OOD)
    assert (run / "rescore" / "ood" / "summary.json").exists()
    assert len(json.loads((run / "summary.json").read_text())["families"]) == 15  # the run's own, untouched
    assert cli_main(["show", str(run), "--battery", "nope"]) == 2
    assert "no scores of battery 'nope'" in " ".join(capsys.readouterr().err.split())
    with battery_view("ood"):
        v = verdict(run, unregistered())
    assert set(v["runs"][0]["families"]) == set(FAMILIES_OOD)
    assert cli_main(["report", str(run), "--battery", "ood", "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "det_an_choice" in html and "pronoun_gender_ref" not in html


def test_rescore_refuses_bad_input_before_writing(trained, tmp_path, capsys):
    run, _ = trained
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"family": "x"}\n')
    assert cli_main(["rescore", str(run), "--battery", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert not RunDir(run).rescore_dir("bad").exists()
    assert not (RunDir(run).training_location()[0] / "rescore" / "bad").exists()


def test_a_runs_folder_is_rescored_one_ray_task_per_run(trained, tmp_path, local_ray):
    from cluster.rescore import rescore_runs

    run, ood = trained
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(run, runs / name, ignore=shutil.ignore_patterns("rescore"))
        shutil.rmtree(runs / name / "store.zarr" / "rescore", ignore_errors=True)
    res = rescore_runs(runs, ood, log=lambda *_: None)
    assert not res["failed"] and sorted(Path(r["run"]).name for r in res["runs"]) == ["a", "b"]
    assert all(os.getpid() != r.get("pid") for r in res["runs"])
    for name in ("a", "b"):
        _same(RunDir(runs / name).open_store(), RunStore(*RunDir(runs / name).rescore_location("ood")), FAMILIES_OOD)


def test_public_loads_an_ungrok_run_folder(trained, rvp4, tmp_path):
    from mech.public import assemble_run, score_revision

    run, _ = trained
    meta = score_revision(run.name, "step20", f"run:{run.parent}", rvp4, str(tmp_path))
    assert meta["bos"] is True and meta["commit"].startswith("sha256:")  # the run's own start token
    st = RunDir(run).open_store()
    with np.load(tmp_path / run.name / "revisions" / "step20.npz") as z:
        fam = np.array([it.family for it in read_battery(rvp4)]) == "det_an_choice"
        np.testing.assert_allclose(z["lp_correct"][fam], st.series("det_an_choice/logp_correct")[1], atol=1e-5)
    pub = assemble_run(tmp_path, run.name, rvp4)
    assert json.loads((pub / "run.json").read_text())["bos"] is True
    assert RunDir(pub).open_store().attrs["bos"] is True


def test_rvp4_on_a_real_text_bpe_corpus(tmp_path, rvp4):
    """The paper's setting in miniature: a byte-level BPE corpus (``runner.data.textcorpus``; its
    end-of-text token is the BOS), rvp4 scored during training with it prepended, no unknown
    tokens, and the rescore equal to training bit for bit."""
    textcorpus = pytest.importorskip("runner.data.textcorpus")
    from runner.train import train_run
    from runner.train.rescore import rescore_run

    docs = [json.dumps({"text": it.prefix + it.correct + "."}) for it in read_battery(rvp4)] * 2
    (tmp_path / "docs.jsonl").write_text("\n".join(docs))
    spec = textcorpus.TextCorpusSpec(name="tiny-bpe", source=f"text:{tmp_path}/docs.jsonl", tokenizer="bpe:600",
                                     row_tokens=32)
    corpus = textcorpus.build_text_corpus(spec, tmp_path / "runs" / "corpora", workers=1)
    bos = json.loads((corpus / "manifest.json").read_text())["bos_id"]
    cfg = tiny_run_config(corpus={"name": "built:tiny-bpe", "story_tokens": 32}, probes={"battery": rvp4},
                          train={"steps": 20, "batch_size": 8}, schedule={"every": 10})
    run = train_run(cfg, tmp_path / "runs", progress=False, log=lambda *_: None)
    st = RunDir(run).open_store()
    assert st.attrs["bos"] is True and st.attrs["bos_id"] == bos  # the corpus's convention, recorded
    assert st.attrs["tokens"]["n_unknown_items"] == 0 and len(st.families()) == 15
    rescore_run(run, rvp4, name="again", log=lambda *_: None)
    _same(st, RunStore(*RunDir(run).rescore_location("again")), st.families())
