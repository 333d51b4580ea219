"""The support law uses the per-class ratio of the cue class the conflict probes test."""

import json

import pytest

import runner.analysis.verdicts as V
from runner.world.rules import RULES
from tests.helpers import tiny_run_config
from tests.unit.fake_runs import make_run, rise_then

# windowed counts per cue class: the feminine class (what a she-only battery tests) is starved,
# the masculine class is not; pooled they would look healthy
COUNTS = {"feminine": {"windowed": {"rule": 1, "prior": 9, "cues": 10}},
          "masculine": {"windowed": {"rule": 99, "prior": 0, "cues": 99}}}


def _she_only_battery(path):
    """pronoun_gender conflict items with feminine cues only (as the reference battery's pronoun items)."""
    items = [it for it in RULES.get("pronoun_gender").battery(8, 4)
             if it.condition != "conflict" or it.correct.strip() == "she"]
    path.write_text("".join(it.model_dump_json() + "\n" for it in items))
    return str(path)


def test_tested_classes_from_the_battery(tmp_path):
    built_in = tiny_run_config(probes={"families": ("pronoun_gender",)})
    assert V.tested_classes(built_in, "pronoun_gender") == ("feminine", "masculine")
    she = tiny_run_config(probes={"battery": _she_only_battery(tmp_path / "b.jsonl")})
    assert V.tested_classes(she, "pronoun_gender") == ("feminine",)
    assert V.tested_classes(she, "no_such_family") is None


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "corpus_support", lambda cdir, fams: {"pronoun_gender": COUNTS})
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pooled = make_run(tmp_path / "runs", "pooled", rise_then(0.9), seed=1, corpus_path=corpus)
    she = make_run(tmp_path / "runs", "she", rise_then(0.1), seed=2, corpus_path=corpus)
    cfg = tiny_run_config(train={"seed": 2}, probes={"battery": _she_only_battery(tmp_path / "b.jsonl")})
    (she / "config.json").write_text(cfg.model_dump_json())
    return pooled, she


def test_support_law_reads_the_tested_class(runs):
    pooled, she = runs
    assert V.tested_support(she, "pronoun_gender") == {"windowed": pytest.approx(2 / 10), "classes": ["feminine"]}
    assert V.tested_support(pooled, "pronoun_gender") == {"windowed": pytest.approx(101 / 10),
                                                          "classes": ["feminine", "masculine"]}
    runs_ = [{"run": d.name, "corpus": "web", "budget": "packed", "seed": s, "dose": "none",
              "families": {"pronoun_gender": {"label": lab, "final": fin, "peak": 1.0}}}
             for d, s, lab, fin in ((pooled, 1, "RECOVERED", 0.9), (she, 2, "DISPLACED", 0.1))]
    across = V.across_runs(runs_, {"pooled": pooled, "she": she})["pronoun_gender"]
    ratios = {r["run"]: (r["support_ratio"], r["support_classes"]) for r in across["runs"]}
    assert ratios["she"] == (pytest.approx(0.2), ["feminine"])
    law = across["support_law"]["support_ratio"]
    assert law["classes"] == ["feminine", "masculine"] and law["n"] == 2
    assert json.dumps(across)  # plain JSON for verdict.json
