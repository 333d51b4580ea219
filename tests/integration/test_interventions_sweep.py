"""Doses as a grid axis on a real local Ray with real DeepSpeed runs: streams built once per
(corpus, dose) and shared by seeds, manifests, the gate stopping a sweep before any run, reuse of
complete cells, and the dose-response verdict."""

import json
from pathlib import Path

import pytest

from cluster.sweep import StreamError, Sweep, run_sweep
from runner.analysis.prereg import Prereg, unregistered
from runner.analysis.verdicts import verdict
from tests.helpers import tiny_grid_spec

pytestmark = pytest.mark.slow

def _spec(tmp_path, name, corpora, probes_extra=""):
    return tiny_grid_spec(tmp_path / f"{name}.toml", name=name, corpora=corpora, probes_extra=probes_extra)


def test_dosed_sweep_shares_streams_and_scores_dose_response(tmp_path, local_ray):
    corpora = ('[{name = "stories", doses = ["none", "kill:1.0"], seeds = [1, 2]}, '
               '{name = "web", doses = ["rescue:1"]}]')
    res = run_sweep(_spec(tmp_path, "iv", corpora), tmp_path / "iv", progress=False)
    assert res.ran == 5 and not res.failed, res
    sw = Sweep(tmp_path / "iv")
    corpora_dir = sw.dir / "corpora"
    kill_dirs = [p for p in corpora_dir.iterdir() if "kill1.0" in p.name]
    rescue_dirs = [p for p in corpora_dir.iterdir() if "rescue1" in p.name]
    assert len(kill_dirs) == 1 and len(rescue_dirs) == 1  # one stream per (corpus, dose), shared by seeds
    used = {json.loads((sw.dir / "runs" / c.run_id / "run.json").read_text()).get("intervened_corpus_path")
            for c in sw.cells if c.dose == "kill:1.0"}
    assert used == {str(kill_dirs[0])}
    km = json.loads((kill_dirs[0] / "manifest.json").read_text())
    base = json.loads((Path(km["generator"]["base_corpus"]) / "manifest.json").read_text())
    assert km["n_tokens"] == base["n_tokens"] and km["sha256"] != base["sha256"]
    pg = km["generator"]["per_family"]["pronoun_gender"]["classes"]["feminine"]  # the paper's kill: one class
    assert pg["flipped_events"] == pg["eligible_events"] == pg["rule"] > 0  # rate 1 flips every eligible site
    assert pg["recount"]["rule"] == 0 and km["generator"]["tokens_changed"] == pg["flipped_sites"] + \
        km["generator"]["per_family"]["number_agreement"]["classes"]["plural"]["flipped_sites"]
    assert km["support"]["pronoun_gender"]["feminine"]["windowed"]["rule"] == 0
    rm = json.loads((rescue_dirs[0] / "manifest.json").read_text())
    assert rm["n_tokens"] == rm["generator"]["base_tokens"]  # token-matched
    for v in rm["generator"]["per_family"].values():
        assert v["events_per_class"] == round(v["delta"]["per_token"] * rm["generator"]["base_tokens"]) > 0
        assert v["injected_tokens"] == v["removed_tokens"]
    # 40-step runs: score from step 0 (the registered classifier starts at step 100)
    v = verdict(sw.dir, unregistered().model_copy(update={"prereg": Prereg(classifier={"start_step": 0})}))
    groups = {(g["intervention"], g["family"]): g for g in v["dose_response"]["groups"]}
    kill = groups[("kill", "pronoun_gender")]
    assert [lv["dose"] for lv in kill["levels"]] == [0.0, 1.0] and kill["levels"][1]["n_seeds"] == 2
    assert kill["levels"][1]["support_windowed"] < kill["levels"][0]["support_windowed"]
    assert groups[("rescue", "pronoun_gender")]["has_baseline"] is False  # no undosed web cell here

    # a second grid reuses the complete undosed cell instead of training it again
    res2 = run_sweep(_spec(tmp_path, "again", '[{name = "stories", doses = ["none"]}]'), tmp_path / "again",
                     progress=False, reuse=[sw.dir])
    assert res2.ran == 0 and len(res2.skipped) == 1
    cell = json.loads((tmp_path / "again" / "manifest.json").read_text())["cells"][0]
    assert cell["reused_from"] == str(sw.dir)
    assert res2.reused == {cell["label"]: str(sw.dir)} and res2.skipped == (cell["label"],)
    assert verdict(tmp_path / "again", unregistered())["runs"][0]["complete"]


def test_gate_violation_stops_the_sweep_before_any_run(tmp_path, local_ray):
    battery = tmp_path / "leaky.jsonl"
    item = {"family": "pronoun_gender", "condition": "conflict", "probe": "pronoun_gender.conflict",
            "split": "heldout", "template_id": "x", "prefix": "Otto cried because he was sad . Ava cried because",
            "correct": " she", "distractor": " he", "chance": 0.5, "item_id": "leak/0"}
    agree = {**item, "condition": "agree", "probe": "pronoun_gender.agree", "item_id": "leak/1",
             "prefix": "Ava cried because"}  # a battery needs heldout agree items (the control)
    battery.write_text(json.dumps(item) + "\n" + json.dumps(agree) + "\n")
    spec = _spec(tmp_path, "leak", '[{name = "web", doses = ["rescue:1"]}]',
                 probes_extra=f'battery = "{battery}"\nfamilies = ["pronoun_gender"]')
    with pytest.raises(StreamError, match="injected cue '(Ava|Otto)' is a probe cue"):
        run_sweep(spec, tmp_path / "leak", progress=False)
    runs = tmp_path / "leak" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run was started
