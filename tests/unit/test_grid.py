import pytest

from runner.grid import GridError, load_grid

GOOD = """
name = "t"
[axes]
corpora = ["web", "stories"]
budgets = ["packed", "dn5"]
seeds = [1, 2]
[train]
steps = 100
"""


def _spec(tmp_path, text):
    p = tmp_path / "g.toml"
    p.write_text(text)
    return p


def test_expansion_is_deterministic_and_ids_unique(tmp_path):
    a = load_grid(_spec(tmp_path, GOOD)).cells()
    b = load_grid(_spec(tmp_path, GOOD)).cells()
    assert [c.run_id for c in a] == [c.run_id for c in b]
    assert len({c.run_id for c in a}) == 8
    assert [c.label for c in a][:3] == ["web/packed/none/s1", "web/packed/none/s2", "web/dn5/none/s1"]
    assert a[0].config.train.steps == 100


def test_demo_spec_is_valid():
    from pathlib import Path

    g = load_grid(Path(__file__).resolve().parents[2] / "examples" / "demo.toml")
    assert len(g.cells()) == 18


@pytest.mark.parametrize("text,needle", [
    (GOOD.replace("seeds = [1, 2]", "seeds = [1, 2]\ncolours = [1]"), "axes.colours: unknown field"),
    (GOOD.replace("seeds = [1, 2]", "seeds = []"), "axes.seeds: List should have at least 1 item"),
    (GOOD.replace("seeds = [1, 2]", "seeds = [1, 1]"), "axes.seeds: duplicate seeds [1]"),
    (GOOD.replace('"dn5"', '"dn-5"'), "axes.budgets"),
    (GOOD.replace("[train]", 'doses = ["kill:0.5"]\n[train]'), "unknown intervention 'kill'"),
    (GOOD.replace('"stories"', '"nope"'), "unknown corpus 'nope'"),
    (GOOD + "\n[resources]\nnum_cpus = 0\n", "resources.num_cpus"),
    (GOOD.replace("steps = 100", "steps = 100000"), "corpus.n_stories"),
])
def test_bad_specs_name_the_field(tmp_path, text, needle):
    with pytest.raises(GridError) as e:
        load_grid(_spec(tmp_path, text))
    assert needle in str(e.value)
