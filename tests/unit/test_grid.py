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
    cells = g.cells()
    assert len(cells) == 18
    # the paper's budgets on the tuned world (docs/world.md): the wider model for 3,000 steps, the lr
    # decayed over the whole run by a squared cosine, 128 probe items per cell
    assert {(c.corpus, c.budget) for c in cells} == {
        (corpus, b) for corpus in ("web-adjacent", "stories-adjacent") for b in ("packed", "dn5", "dn1.5")}
    assert {(c.config.probes.families, c.config.probes.n_per_cell) for c in cells} == {
        (("pronoun_gender_adjacent", "number_agreement"), 128)}
    assert {(c.config.optim.lr, c.config.optim.warmdown_frac, c.config.optim.warmdown_power) for c in cells} == {
        (1.2e-3, 1.0, 2.0)}
    assert {(c.config.model.d_model, c.config.model.d_mlp, c.config.train.steps) for c in cells} == {(128, 512, 3000)}


def test_tour_cells_are_short_demo_cells_or_their_doses():
    """The tour's undosed cells are the 2,500-step demo grid's seed-42 packed cells (same run ids, so
    that grid's folder can feed ``ungrok demo --reuse``), its dosed ones the same recipe; the demo grid
    itself is the tuning grid it was measured as (``demo_cos2.toml``: the same run ids), and differs from
    the 3,000-step grid it replaced only in its schedule and probe count."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    short = load_grid(examples / "tuning" / "demo_wide_short.toml").cells()
    demo = load_grid(examples / "demo.toml").cells()
    tour = load_grid(examples / "tour.toml").cells()
    short_ids = {c.run_id for c in short}
    assert [c.run_id in short_ids for c in tour] == [c.dose == "none" for c in tour] == [True, False, True, False]
    assert {c.config.model for c in tour} == {c.config.model for c in demo}
    assert {c.run_id for c in load_grid(examples / "tuning" / "demo_cos2.toml").cells()} == {c.run_id for c in demo}
    before = load_grid(examples / "tuning" / "demo_wide_3000.toml").cells()
    new = {"optim": {"lr": 1.2e-3, "warmdown_power": 2.0}, "probes": {"n_per_cell": 128}}
    moved = [c.config.model_copy(update={k: getattr(c.config, k).model_copy(update=v) for k, v in new.items()})
             for c in before]
    assert sorted(moved, key=repr) == sorted((c.config for c in demo), key=repr)
    assert not {c.run_id for c in before} & {c.run_id for c in demo}  # every demo run id moved


@pytest.mark.parametrize("text,needle", [
    (GOOD.replace("seeds = [1, 2]", "seeds = [1, 2]\ncolours = [1]"), "axes.colours: unknown field"),
    (GOOD.replace("seeds = [1, 2]", "seeds = []"), "axes.seeds: List should have at least 1 item"),
    (GOOD.replace("seeds = [1, 2]", "seeds = [1, 1]"), "axes.seeds: duplicate seeds [1]"),
    (GOOD.replace('"dn5"', '"dn-5"'), "axes.budgets"),
    (GOOD.replace("[train]", 'doses = ["heal:0.5"]\n[train]'), "unknown intervention 'heal'"),
    (GOOD.replace('"stories"', '"nope"'), "unknown corpus 'nope'"),
    (GOOD + "\n[resources]\nnum_cpus = 0\n", "resources.num_cpus"),
    (GOOD.replace("steps = 100", "steps = 100000"), "corpus.n_stories"),
])
def test_bad_specs_name_the_field(tmp_path, text, needle):
    with pytest.raises(GridError) as e:
        load_grid(_spec(tmp_path, text))
    assert needle in str(e.value)


def test_corpus_tables_carry_their_own_axes(tmp_path):
    import interventions  # noqa: F401  (registers kill and rescue)

    text = GOOD.replace('corpora = ["web", "stories"]',
                        'corpora = [{name = "stories", doses = ["none", "kill:1.0"]}, '
                        '{name = "web", doses = ["rescue:3"], seeds = [5]}]')
    cells = load_grid(_spec(tmp_path, text)).cells()
    labels = [c.label for c in cells]
    assert labels == ["stories/packed/none/s1", "stories/packed/none/s2", "stories/packed/kill:1.0/s1",
                      "stories/packed/kill:1.0/s2", "stories/dn5/none/s1", "stories/dn5/none/s2",
                      "stories/dn5/kill:1.0/s1", "stories/dn5/kill:1.0/s2", "web/packed/rescue:3/s5",
                      "web/dn5/rescue:3/s5"]
    assert cells[0].config.corpus.name == "stories" and cells[2].config.dose == "kill:1.0"


@pytest.mark.parametrize("table,needle", [
    ('{name = "web", doses = ["kill:2"]}', "kill rate 2.0 must be in (0, 1]"),
    ('{name = "web", seeds = [3, 3]}', "corpus 'web': seeds: duplicate seeds [3]"),
    ('{name = "web", doses = []}', "corpus 'web': doses must be a non-empty list"),
])
def test_bad_corpus_tables_name_the_field(tmp_path, table, needle):
    import interventions  # noqa: F401

    with pytest.raises(GridError) as e:
        load_grid(_spec(tmp_path, GOOD.replace('corpora = ["web", "stories"]', f"corpora = [{table}]")))
    assert needle in str(e.value) and "axes.corpora" in str(e.value)


def test_status_table_shows_corpus_settings_literally(tmp_path):
    """Labels like synthetic[support=0.3] must not be eaten as rich markup."""
    from rich.console import Console

    from cluster.sweep import prepare_sweep, status_table

    spec = tmp_path / "g.toml"
    spec.write_text('name = "s"\n[axes]\ncorpora = [{name = "synthetic", support = 0.3}, '
                    '{name = "synthetic", support = 0.5}]\nbudgets = ["packed"]\nseeds = [1]\n')
    prepare_sweep(spec, tmp_path / "sw")
    con = Console(record=True, width=200)
    con.print(status_table(tmp_path / "sw"))
    text = con.export_text()
    assert "synthetic[support=0.3]/packed/none/s1" in text and "synthetic[support=0.5]/packed/none/s1" in text
