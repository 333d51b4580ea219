import pytest
from pydantic import ValidationError

from runner.config import CorpusConfig, RunConfig, ScheduleConfig, TrainConfig
from runner.registry import Registry
from tests.helpers import tiny_run_config


def test_registry_refuses_duplicates():
    r = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 2)
    with pytest.raises(KeyError, match="unknown thing 'b'"):
        r.get("b")


@pytest.mark.parametrize("budget", ["packed", "dn5", "dn15", "dn0.5"])
def test_valid_budgets(budget):
    assert TrainConfig(budget=budget).budget == budget


@pytest.mark.parametrize("budget", ["dn-5", "dn0", "fresh", "dn", "-1"])
def test_bad_budget_names_field_and_fix(budget):
    with pytest.raises(ValidationError) as e:
        TrainConfig(budget=budget)
    assert "budget" in str(e.value) and "dn<ratio>" in str(e.value)


def test_unknown_corpus_lists_known():
    with pytest.raises(ValidationError, match="unknown corpus 'nope'.*stories"):
        CorpusConfig(name="nope")


def test_synthetic_needs_support():
    with pytest.raises(ValidationError, match="support"):
        CorpusConfig(name="synthetic")
    assert CorpusConfig(name="synthetic", support=0.3).dirname.startswith("synthetic-")


def test_reuse_is_a_world_knob_and_leaves_default_ids_alone():
    assert RunConfig(corpus={"reuse": None}).run_id == RunConfig().run_id
    assert RunConfig(corpus={"reuse": 0.8}).run_id != RunConfig().run_id
    with pytest.raises(ValidationError, match="corpus.reuse is for the built-in world"):
        CorpusConfig(name="built:wiki", reuse=0.5)
    with pytest.raises(ValidationError, match="reuse"):
        CorpusConfig(reuse=1.5)


def test_run_id_is_hash_of_resolved_config():
    a, b = tiny_run_config(), tiny_run_config()
    assert a.run_id == b.run_id
    c = tiny_run_config(train={"seed": 8})
    assert c.run_id != a.run_id and c.run_id.startswith("web-packed-s8-")
    # A default written out explicitly resolves to the same id.
    assert RunConfig(train={"budget": "packed"}).run_id == RunConfig().run_id


def test_schedule_dense_window():
    s = ScheduleConfig(every=100, dense_every=25, dense_start=100, dense_end=200).steps(450)
    assert s == [0, 100, 125, 150, 175, 200, 300, 400, 450]


def test_ctx_must_fit_story():
    with pytest.raises(ValidationError, match="n_ctx"):
        RunConfig(model={"n_ctx": 32})
