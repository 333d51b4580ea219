"""The paper preset: its model's size and split, the preset and its arms in grids and ``ungrok
train``, the examples under examples/paper/, and ``ungrok plan``'s figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cluster.cli import main as cli_main
from runner.config import ModelConfig, RunConfig
from runner.grid import RUN_PRESETS, GridError, GridSpec, RunPreset, load_grid
from runner.model import build_model, count_params, flops_per_token, n_params, param_groups
from runner.train.plan import Throughput, plan_grid

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "examples" / "paper"
PAPER_MODEL = ModelConfig(**RUN_PRESETS.get("paper").sections["model"])
STEPS_TOKENS = 4400 * 32 * 2048  # tokens of one paper run


def test_paper_model_has_the_papers_parameter_count_and_split():
    model = build_model(PAPER_MODEL, 8192, 0)
    n = n_params(model)
    assert abs(n - 11.5e6) / 11.5e6 < 0.05 and n == 11_534_340
    split = {k: sum(p.numel() for _, p in v) for k, v in param_groups(model).items()}
    assert split == {"matrix": 4 * (4 * 256**2 + 2 * 256 * 1024), "embed": 3 * 8192 * 256, "head": 8192 * 256,
                     "scalar": 4}
    assert count_params(PAPER_MODEL, 8192) == {**split, "value_embed": 2 * 8192 * 256, "total": n}
    # the vocabulary is the model's (8,192) whatever the tokenizer's size below it
    assert n_params(build_model(PAPER_MODEL, 5000, 0)) == n
    with pytest.raises(ValueError, match=r"model.d_vocab \(8,192\) is smaller than the tokenizer's"):
        build_model(PAPER_MODEL, 9000, 0)


@pytest.mark.parametrize("cfg", [
    ModelConfig(),
    ModelConfig(d_model=32, n_heads=2, d_mlp=96, n_layers=3, logit_soft_cap=10.0),
    ModelConfig(arch="nanochat", d_model=32, n_heads=4, d_mlp=64, n_layers=3, act_fn="relu2"),
    ModelConfig(arch="nanochat", d_model=16, n_heads=2, d_mlp=48, n_layers=1, act_fn="gelu", d_vocab=300),
])
def test_count_params_equals_the_built_model(cfg):
    model = build_model(cfg, 120, 1)
    counted = count_params(cfg, 120)
    assert counted["total"] == n_params(model)
    assert {k: counted[k] for k in ("matrix", "embed", "head", "scalar")} == {
        k: sum(p.numel() for _, p in v) for k, v in param_groups(model).items()}


def test_flops_per_token_is_6n_plus_attention():
    non_embedding = 4 * (4 * 256**2 + 2 * 256 * 1024) + 8192 * 256 + 4
    assert flops_per_token(PAPER_MODEL, 8192, 2048) == 6 * non_embedding + 12 * 4 * 256 * 2048


def test_nanochat_decoder_soft_caps_hooks_and_reloads(tmp_path):
    cfg = ModelConfig(arch="nanochat", d_model=32, n_heads=2, d_mlp=64, n_layers=2, n_ctx=16, act_fn="relu2",
                      logit_soft_cap=3.0)
    model = build_model(cfg, 50, 3)
    with torch.no_grad():
        for p in model.parameters():  # leave the zero init, so that the logits are not all 0
            p.add_(torch.randn_like(p) * 0.5)
    x = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        plain = model(x)
        cached, cache = model.run_with_cache(x)  # hooks on the pattern: the materialised path
    assert plain.abs().max() <= 3.0 and plain.abs().max() > 1.0
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
    for name in ("blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern",
                 "blocks.0.mlp.hook_post", "ln_final.hook_normalized"):
        assert name in cache
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"].sum(-1), torch.ones(2, 2, 16))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert {"value_embeds.1.weight", "ve_lambdas.1"} <= set(state)
    fresh = build_model(cfg, 50, 99)
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), plain)
    # zero init: the unembedding and output projections start at 0, so the first logits are 0
    assert build_model(cfg, 50, 3)(x).abs().max() == 0


def test_relu2_needs_the_nanochat_arch():
    with pytest.raises(ValueError, match="act_fn 'relu2' needs arch 'nanochat'"):
        ModelConfig(act_fn="relu2")


def test_default_run_ids_are_unchanged_by_the_new_fields():
    assert RunConfig().run_id == "web-packed-s42-6a72c3886d"
    assert RunConfig.model_validate({"optim": {"name": "muon"}}).run_id != RunConfig().run_id
    assert RunConfig.model_validate({"model": {"logit_soft_cap": 15.0}}).run_id != RunConfig().run_id


# ---- the preset in grids and the train command ---------------------------------------------------


def _grid(**kw) -> GridSpec:
    base = {"axes": {"corpora": ["stories", "web"], "seeds": [1], "budgets": ["dn5"]}, "preset": "paper",
            "train": {"steps": 50}}
    return GridSpec(**{**base, **kw})


def test_a_grid_on_the_preset_takes_each_corpus_arm():
    cells = {c.corpus: c.config for c in _grid().cells()}
    ts, web = cells["stories"], cells["web"]
    assert ts.model == PAPER_MODEL and ts.corpus.story_tokens == 2048 and ts.train.precision == "auto"
    assert (ts.optim.matrix_lr, ts.optim.embed_lr, ts.optim.weight_decay) == (0.04, 0.6, 0.2)
    assert (web.optim.matrix_lr, web.optim.embed_lr, web.optim.weight_decay) == (0.02, 0.2, 0.0)
    assert ts.optim.name == "muon" and ts.optim.warmdown_frac == 0.3 and ts.optim.weight_decay_groups == ("matrix",)
    assert ts.train.steps == 50 and ts.schedule.steps(4400)[:6] == [0, 100, 125, 150, 175, 200]
    # an explicit arm wins over the corpus name, and the grid's own sections over the preset
    g = _grid(axes={"corpora": [{"name": "stories", "arm": "web"}], "seeds": [1]}, optim={"embed_lr": 0.1})
    (cell,) = g.cells()
    assert cell.corpus == "stories[arm=web]" and cell.config.optim.matrix_lr == 0.02
    assert cell.config.optim.embed_lr == 0.1


@pytest.mark.parametrize("kw,msg", [
    ({"preset": "nope"}, "unknown run preset 'nope'; known: "),
    ({"axes": {"corpora": ["synthetic"], "seeds": [1]}, "corpus": {"support": 0.3}},
     "corpus 'synthetic' has no arm in this preset"),
    ({"axes": {"corpora": [{"name": "web", "arm": "cosmic"}], "seeds": [1]}}, "unknown arm 'cosmic'"),
    ({"preset": None, "axes": {"corpora": [{"name": "web", "arm": "web"}], "seeds": [1]}}, "needs a preset"),
])
def test_preset_mistakes_name_the_fix(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _grid(**kw)


def test_run_presets_refuse_duplicates_and_undefined_arms():
    with pytest.raises(ValueError, match="already registered"):
        RUN_PRESETS.register("paper", RUN_PRESETS.get("paper"))
    with pytest.raises(ValueError, match="names arms"):
        RunPreset(description="x", sections={}, corpus_arms={"web": "missing"})


def test_train_preset_flags_build_the_papers_config():
    from cluster.cli_plan import preset_config
    from runner.config import CorpusConfig

    cfg = preset_config("paper", None, CorpusConfig(name="stories"), train={"budget": "dn5", "seed": 3},
                        probes={}, dose="none")
    assert cfg.model == PAPER_MODEL and cfg.optim.embed_lr == 0.6 and cfg.train.steps == 4400
    assert cfg.train.budget == "dn5" and cfg.corpus.story_tokens == 2048
    web = preset_config("paper", "web", CorpusConfig(name="stories"), train={}, probes={}, dose="none")
    assert web.optim.embed_lr == 0.2
    assert preset_config(None, None, CorpusConfig(name="web"), train={}, probes={}, dose="none") == RunConfig()


# ---- examples/paper and ungrok plan --------------------------------------------------------------


@pytest.fixture
def at_repo(monkeypatch, reference_battery):
    """The examples name the battery relative to the repository root (where ungrok runs)."""
    monkeypatch.chdir(REPO)


def test_paper_examples_load(at_repo):
    g = load_grid(PAPER / "grid.toml")
    cells = g.cells()
    assert len(cells) == 18 and g.resources.num_gpus == 1
    assert {c.corpus for c in cells} == {"built:tinystories", "built:web"}
    assert {c.budget for c in cells} == {"packed", "dn5", "dn1.5"} and {c.seed for c in cells} == {42, 43, 44}
    assert all(c.config.model == PAPER_MODEL for c in cells)
    assert {c.config.optim.matrix_lr for c in cells if c.corpus == "built:web"} == {0.02}
    assert "pronoun_gender_ref" in cells[0].config.probes.families
    sizes = {f: len(load_grid(PAPER / f).cells()) for f in ("kill.toml", "kill_an.toml", "rescue.toml",
                                                           "rescue_early.toml", "rescue_late.toml")}
    assert sizes == {"kill.toml": 9, "kill_an.toml": 15, "rescue.toml": 12, "rescue_early.toml": 3,
                     "rescue_late.toml": 3}
    from runner.analysis.prereg import lock_path, parse

    pre = parse(PAPER / "prereg.toml")
    assert pre.quarantined_seeds == {1042, 1043, 1044} and {p.id for p in pre.predictions} >= {"S1", "S2", "K1"}
    assert not lock_path(PAPER / "prereg.toml").exists()  # a template: the user locks their copy


def test_plan_of_the_paper_grid(at_repo, tmp_path):
    g = load_grid(PAPER / "grid.toml")
    p = plan_grid(g, Throughput.stated_tokens(1e6))
    fpt = flops_per_token(PAPER_MODEL, 8192, 2048)
    assert p.totals["cells"] == 18 and p.totals["tokens"] == 18 * STEPS_TOKENS
    assert p.totals["flops"] == pytest.approx(18 * STEPS_TOKENS * fpt)
    assert p.totals["gpu_hours"] == pytest.approx(18 * STEPS_TOKENS / 1e6 / 3600)
    dn = [c for c in p.cells if "/dn1.5/" in c.label]
    assert dn[0].unique_tokens == round(1.5 * 11_534_340) and dn[0].params == 11_534_340
    # a measured file prices FLOPs at its achieved FLOP/s: same shape -> tokens / its tokens/s
    f = tmp_path / "tp.json"
    f.write_text(json.dumps({"tokens_per_second": 2e6, "flops_per_token": fpt, "device": "H100", "mfu": 0.1,
                             "precision": "bf16"}))
    m = plan_grid(g, Throughput.measured(f))
    assert m.totals["gpu_hours"] == pytest.approx(18 * STEPS_TOKENS / 2e6 / 3600)
    assert "measured on H100" in m.throughput.source


def test_plan_command_prints_totals_and_refuses_bad_input(at_repo, tmp_path, capsys):
    grid = str(PAPER / "grid.toml")
    assert cli_main(["plan", grid, "--tokens-per-second", "1000000"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert f"18 cells, {18 * STEPS_TOKENS:,} tokens" in flat and "GPU-hours at stated: 1,000,000 tokens/s" in flat
    assert cli_main(["plan", grid, "--json", "--mfu", "0.2", "--peak-tflops", "500"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["gpu_hours"] == pytest.approx(doc["totals"]["flops"] / (0.2 * 500e12) / 3600)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli_main(["plan", grid, "--measured", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a throughput file" in err and "Traceback" not in err
    assert cli_main(["plan", grid, "--mfu", "0.2", "--tokens-per-second", "5"]) == 2
    assert "give one of" in capsys.readouterr().err
    assert cli_main(["plan", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plan_without_a_measurement_says_it_assumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no bench/throughput.json here
    (tmp_path / "g.toml").write_text('name = "g"\npreset = "paper"\n[axes]\ncorpora = ["stories"]\nseeds = [1]\n')
    assert cli_main(["plan", "g.toml"]) == 0
    assert "assumed: 10% MFU" in " ".join(capsys.readouterr().out.split())


def test_grid_error_for_a_bad_preset_file(tmp_path):
    f = tmp_path / "g.toml"
    f.write_text('name = "g"\npreset = "papr"\n[axes]\ncorpora = ["web"]\nseeds = [1]\n')
    with pytest.raises(GridError, match="unknown run preset 'papr'"):
        load_grid(f)


def test_train_preset_mistakes_are_one_line_before_any_file(tmp_path, capsys):
    out = tmp_path / "runs"
    assert cli_main(["train", "--preset", "paper", "--corpus", "stories", "--arm", "cosmic", "--out", str(out)]) == 2
    assert "--preset paper: unknown arm 'cosmic'" in capsys.readouterr().err
    assert cli_main(["train", "--arm", "web", "--out", str(out)]) == 2
    assert "--arm needs --preset" in capsys.readouterr().err
    assert cli_main(["train", "--preset", "paper", "--corpus", "synthetic", "--support", "0.3", "--out",
                     str(out)]) == 2
    assert "has no arm in this preset" in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
