"""ungrok audit: per-document counting from every reader, bootstrap CIs, the f* fit and the call."""

import json

import numpy as np
import pytest

from runner.analysis.audit import (
    AuditError,
    audit_corpus,
    bootstrap_ratio,
    doc_counts,
    fit_critical_ratio,
    read_documents,
    risk,
)
from runner.trajectory import Classifier

DOCS = ["Sue cried because she was sad. Tom cried because she was sad.",  # Sue: rule; Tom: prior (she)
        "He waited. Mary smiled because She was glad.",  # Mary: rule ("She" case-folded)
        "nothing to see here"]


def test_plain_text_counts_per_document(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("\n".join(DOCS) + "\n\n")
    res = audit_corpus(f, ["pronoun_gender"], n_boot=200)
    w = res.families["pronoun_gender"]["windowed"]
    assert res.n_docs == 3 and (w["rule"], w["prior"]) == (2, 1)
    assert w["ratio"] == pytest.approx(3 / 2)
    assert w["ci"][0] <= w["ratio"] <= w["ci"][1]
    c = res.families["pronoun_gender"]["contested"]
    assert (c["rule"], c["prior"]) == (0, 1)  # Tom's "she" copies Sue's after the same verb


def test_windows_do_not_cross_documents():
    from runner.analysis.audit import audit_tokenizer

    tok = audit_tokenizer()
    docs = [np.array(tok.encode("Sue waited").ids), np.array(tok.encode("he was sad").ids)]
    out = doc_counts(docs, tok, ["pronoun_gender"], pad=tok.token_to_id("<pad>"))
    rule, prior = out["pronoun_gender"]["windowed"]
    assert rule.sum() == 0 and prior.sum() == 0


def test_hf_dataset_and_token_stream_readers(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"story": DOCS}).save_to_disk(str(tmp_path / "ds"))
    a = audit_corpus(tmp_path / "ds", ["pronoun_gender"], text_column="story", n_boot=100)
    assert a.families["pronoun_gender"]["windowed"]["rule"] == 2
    with pytest.raises(AuditError, match="text column 'text' not in"):
        audit_corpus(tmp_path / "ds", ["pronoun_gender"])
    from runner.analysis.audit import audit_tokenizer

    tok = audit_tokenizer()
    tok.save(str(tmp_path / "tok.json"))
    ids = [tok.encode(d).ids for d in DOCS]
    arr = np.full((3, max(map(len, ids))), tok.token_to_id("<pad>"), dtype=np.int32)
    for i, r in enumerate(ids):
        arr[i, : len(r)] = r
    np.save(tmp_path / "s.npy", arr)
    b = audit_corpus(tmp_path / "s.npy", ["pronoun_gender"], tokenizer=str(tmp_path / "tok.json"), n_boot=100)
    assert b.families == {**b.families} and b.families["pronoun_gender"]["windowed"]["prior"] == 1
    with pytest.raises(AuditError, match="--tokenizer"):
        read_documents(tmp_path / "s.npy")


def test_built_corpus_contested_counts_equal_the_support_counter(tmp_path):
    from runner.config import CorpusConfig
    from runner.data.corpora import build_corpus, load_corpus
    from runner.data.support import count_support, pooled

    path = build_corpus(CorpusConfig(name="web", n_stories=600, seed=2), tmp_path)
    c = load_corpus(path)
    ref = count_support(c.rows, c.tokenizer, ["pronoun_gender", "number_agreement"], pad_id=c.pad_id)
    res = audit_corpus(path, ["pronoun_gender", "number_agreement"], block=128, n_boot=100)
    for fam in ("pronoun_gender", "number_agreement"):
        p = pooled(ref[fam], "contested")
        contested = res.families[fam]["contested"]
        assert (contested["rule"], contested["prior"]) == (p["rule"], p["prior"])
    # the same with 2 processes
    two = audit_corpus(path, ["pronoun_gender"], block=128, workers=2, n_boot=100)
    assert two.families["pronoun_gender"]["contested"]["rule"] == res.families["pronoun_gender"]["contested"]["rule"]
    assert res.n_tokens == c.n_tokens


def test_bootstrap_ci_narrows_with_more_documents():
    rng = np.random.default_rng(0)
    small = bootstrap_ratio(rng.poisson(3, 50), rng.poisson(1, 50))
    big = bootstrap_ratio(rng.poisson(3, 5000), rng.poisson(1, 5000))
    assert big[1] - big[0] < (small[1] - small[0]) / 3
    assert big[0] < 3.0 < big[1]
    blocks = bootstrap_ratio(rng.poisson(3, 50_000), rng.poisson(1, 50_000))  # block bootstrap path
    assert blocks[0] < 3.0 < blocks[1]


def _pts(pairs):
    return [{"run": f"r{i}", "ratio": r, "label": lab, "final": 0.0} for i, (r, lab) in enumerate(pairs)]


def test_fit_separated_logistic_and_calls():
    sep = fit_critical_ratio(_pts([(0.1, "DISPLACED"), (0.4, "DISPLACED"), (1.0, "RECOVERED"), (4.0, "RECOVERED"),
                                   (2.0, "NEVER")]))
    assert sep["method"] == "separated" and sep["ci"] == pytest.approx([0.4, 1.0])
    assert sep["f_star"] == pytest.approx(np.sqrt(0.4))
    assert sep["left_out"] == ["r4"]
    unstable = _pts([(0.1, "DISPLACED"), (0.4, "UNSTABLE"), (1.0, "RECOVERED")])
    unstable[1]["final"] = 0.75  # counts as survived (>= 0.7)
    assert fit_critical_ratio(unstable)["ci"] == pytest.approx([0.1, 0.4])
    assert risk([0.1, 0.12], sep) == "at risk" and risk([3.9, 4.1], sep) == "safe"
    assert risk([0.3, 0.5], sep) == "undetermined"
    mixed = fit_critical_ratio(_pts([(0.1, "DISPLACED"), (0.3, "DISPLACED"), (0.5, "RECOVERED"), (0.6, "DISPLACED"),
                                     (0.9, "RECOVERED"), (2.0, "RECOVERED"), (3.0, "RECOVERED")]))
    assert mixed["method"] == "logistic" and 0.3 < mixed["f_star"] < 0.9
    assert mixed["ci"][0] < mixed["f_star"] < mixed["ci"][1]
    none = fit_critical_ratio(_pts([(0.1, "DISPLACED")]))
    assert none["f_star"] is None and risk([0.1, 0.2], none) == "undetermined"
    assert json.dumps(sep)


# ---- calibration under a prereg -----------------------------------------------------------
PREREG = """title = "calibration"
[classifier]
displaced = 0.5
recovered = 0.7
"""


@pytest.fixture
def calibration_sweep(tmp_path):
    """Three runs on corpora of rising support: DISPLACED (final 0.25), PARTIAL (0.625),
    recovered (1.0). 0.625 survives under displaced/recovered 0.5/0.7 (midpoint 0.6), not under
    the defaults 0.6/0.8 (midpoint 0.7)."""
    from runner.config import CorpusConfig
    from runner.data.corpora import build_corpus
    from tests.unit.fake_runs import make_run, rise_then

    runs = tmp_path / "sweep" / "runs"
    corpora = {}
    for i, (s, final) in enumerate(((0.1, 0.25), (0.4, 0.625), (0.9, 1.0))):
        cfg = CorpusConfig(name="synthetic", support=s, n_stories=300, seed=0)
        corpora[s] = build_corpus(cfg, tmp_path / "corpora")
        make_run(runs, f"r{i}", rise_then(final), seed=i, corpus_path=corpora[s])
    prereg = tmp_path / "p.toml"
    prereg.write_text(PREREG)
    from runner.analysis.prereg import lock

    lock(prereg)
    return tmp_path / "sweep", prereg, corpora


def test_calibrate_takes_the_classifier_from_the_prereg(calibration_sweep):
    from runner.analysis.audit import calibrate
    from runner.analysis.prereg import load_locked

    sweep, prereg, _ = calibration_sweep
    default = calibrate([sweep], "pronoun_gender", "contested")
    registered = calibrate([sweep], "pronoun_gender", "contested", load_locked(prereg))
    assert [p["label"] for p in default.points] == ["DISPLACED", "PARTIAL", "RECOVERED"]
    assert [p["survived"] for p in default.points] == [False, False, True]
    assert [p["survived"] for p in registered.points] == [False, True, True]
    assert registered.classifier.recovered == 0.7 and default.classifier == Classifier()
    r = [p["ratio"] for p in default.points]
    assert r[1] < default.fit["f_star"] < r[2] and r[0] < registered.fit["f_star"] < r[1]
    assert registered.survival_lines == [0.6]
    doc = registered.to_json()
    assert doc["prereg"]["path"] == str(prereg) and doc["classifier"]["displaced"] == 0.5
    assert json.dumps(doc)


def test_audit_cli_calibration_with_prereg_writes_what_the_report_reads(calibration_sweep, tmp_path):
    from cluster.cli import main as cli_main
    from runner.report.html import _calibration_sections

    sweep, prereg, corpora = calibration_sweep
    assert cli_main(["audit", str(corpora[0.4]), "--rules", "pronoun_gender", "--calibration", str(sweep),
                     "--prereg", str(prereg), "--json", str(tmp_path / "a.json")]) == 0
    cal = json.loads((sweep / "calibration" / "pronoun_gender-contested.json").read_text())
    assert [p["survived"] for p in cal["points"]] == [False, True, True]
    assert cal["classifier"]["recovered"] == 0.7 and cal["audited"]["call"] in ("at risk", "safe", "undetermined")
    assert (sweep / "calibration" / "pronoun_gender-contested.png").exists()
    html = "".join(_calibration_sections(sweep, tmp_path))
    assert "final &gt;= 0.6" in html and str(prereg) in html
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["calibration"]["pronoun_gender"]["fit"] == cal["fit"]
