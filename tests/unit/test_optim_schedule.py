"""The optimizer and schedule of ``runner.train.optim``: the learning-rate and weight-decay
schedules step by step against their formulas, the default unchanged, Muon on the matrices only."""

from __future__ import annotations

import math

import pytest
import torch

from runner.config import ModelConfig, OptimConfig, RunConfig
from runner.model import build_model, param_groups
from runner.train.optim import MuonAdamW, Schedule, build_optimizer, grouped, lr_factor, warmdown_start, wd_factor

TINY = ModelConfig(arch="nanochat", n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=16, act_fn="relu2",
                   logit_soft_cap=15.0)


def _formula_lr(s: int, S: int, warmup: int, frac: float, power: float = 1.0) -> float:
    """The schedule written out independently: linear warm-up, then cosine warm-down to 0 (to a power)."""
    w = min(1.0, (s + 1) / warmup) if warmup else 1.0
    s0 = S - round(frac * S)
    return w * ((0.5 * (1 + math.cos(math.pi * (s - s0) / (S - s0)))) ** power if frac and s >= s0 else 1.0)


@pytest.mark.parametrize("warmup,frac,S,power", [(0, 0.3, 4400, 1.0), (10, 0.3, 100, 1.0), (50, 0.0, 200, 1.0),
                                                 (5, 0.5, 37, 1.0), (50, 1.0, 300, 1.0), (50, 1.0, 300, 2.0),
                                                 (0, 0.3, 100, 0.5)])
def test_lr_factor_matches_the_formula_at_every_step(warmup, frac, S, power):
    o = OptimConfig(warmup_steps=warmup, warmdown_frac=frac, warmdown_power=power)
    for s in range(S + 1):
        assert lr_factor(o, s, S) == pytest.approx(_formula_lr(s, S, warmup, frac, power), abs=1e-15)
    if frac:
        assert lr_factor(o, S, S) == pytest.approx(0.0, abs=1e-15)  # the warm-down ends at 0


def test_paper_warmdown_starts_at_step_3080():
    o = OptimConfig(warmup_steps=0, warmdown_frac=0.3)
    assert warmdown_start(o, 4400) == 3080
    assert lr_factor(o, 3079, 4400) == 1.0 and lr_factor(o, 3080, 4400) == 1.0 > lr_factor(o, 3081, 4400)
    assert lr_factor(o, 3740, 4400) == pytest.approx(0.5)  # half-way down the cosine
    squared = OptimConfig(warmup_steps=0, warmdown_frac=0.3, warmdown_power=2.0)
    assert lr_factor(squared, 3740, 4400) == pytest.approx(0.25) and lr_factor(squared, 3080, 4400) == 1.0


def test_warmdown_power_enters_the_run_id_only_when_set():
    from runner.config import RunConfig

    assert RunConfig(optim={"warmdown_power": 1.0}).run_id == RunConfig().run_id
    assert RunConfig(optim={"warmdown_power": 2.0}).run_id != RunConfig().run_id


def test_schedule_sets_every_groups_lr_and_weight_decay_at_every_update():
    S, o = 40, OptimConfig(name="muon", lr=0.02, matrix_lr=0.04, embed_lr=0.6, head_lr=0.3, scalar_lr=0.01,
                           warmup_steps=4, warmdown_frac=0.3, weight_decay=0.2, weight_decay_groups=("matrix",),
                           weight_decay_schedule="linear")
    model = build_model(TINY, 50, 0)
    opt = build_optimizer(o, model)
    sched = Schedule(opt, o, S)
    base = {"matrix": 0.04, "embed": 0.6, "head": 0.3, "scalar": 0.01}
    assert [g["group"] for g in opt.param_groups] == ["matrix", "embed", "head", "scalar"]
    for s in range(S):
        for g in opt.param_groups:  # what update s uses
            assert g["lr"] == pytest.approx(base[g["group"]] * _formula_lr(s, S, 4, 0.3), rel=1e-12)
            want_wd = 0.2 * (1 - s / S) if g["group"] == "matrix" else 0.0
            assert g["weight_decay"] == pytest.approx(want_wd, rel=1e-12, abs=1e-15)
        assert sched.get_last_lr()[0] == opt.param_groups[0]["lr"]  # train/lr logs the matrix group
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)


def test_wd_factor_constant_and_linear():
    assert wd_factor(OptimConfig(), 7, 10) == 1.0
    lin = OptimConfig(weight_decay_schedule="linear")
    assert [wd_factor(lin, s, 4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_default_config_is_the_one_group_adamw_with_the_old_warmup():
    o = OptimConfig()
    assert not grouped(o)
    model = build_model(ModelConfig(d_model=16, n_heads=2, d_mlp=32, n_ctx=16), 40, 0)
    opt = build_optimizer(o, model)
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 1
    old = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    old_sched = torch.optim.lr_scheduler.LambdaLR(old, lambda s: min(1.0, (s + 1) / o.warmup_steps))
    sched = Schedule(opt, o, 200)
    for _ in range(80):  # the lr of every update equals the replaced LambdaLR's, exactly
        assert sched.get_last_lr() == old_sched.get_last_lr()
        sched.step()
        old_sched.step()


def test_a_group_lr_alone_makes_adamw_groups():
    o = OptimConfig(embed_lr=0.5)
    assert grouped(o)
    opt = build_optimizer(o, build_model(TINY, 30, 0))
    assert type(opt) is torch.optim.AdamW
    assert {g["group"]: g["lr"] for g in opt.param_groups} == {"matrix": 1e-3, "embed": 0.5, "head": 1e-3,
                                                              "scalar": 1e-3}


def test_muon_updates_exactly_the_block_matrices():
    torch.manual_seed(0)
    model = build_model(TINY, 30, 0)
    o = OptimConfig(name="muon", lr=0.02, matrix_lr=0.05, embed_lr=0.3, weight_decay=0.1,
                    weight_decay_groups=("matrix",))
    opt = build_optimizer(o, model)
    assert isinstance(opt, MuonAdamW)
    muon, adamw = opt.parts
    assert type(muon) is torch.optim.Muon and type(adamw) is torch.optim.AdamW
    groups = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert in_muon == {n for n, _ in groups["matrix"]}
    assert all(".layers." in f".{n}" and p.ndim == 2 for n, p in groups["matrix"])
    assert {n.split(".")[0] for n, _ in groups["embed"]} == {"tok_embed", "value_embeds"}
    assert [n.split(".")[0] for n, _ in groups["head"]] == ["head"] and groups["scalar"]
    # one step: each matrix moves as a lone Muon would move it, everything else as a lone AdamW would
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    ref = {n: (p.detach().clone(), torch.as_tensor(p.grad).clone()) for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        w = torch.nn.Parameter(ref[n][0].clone())
        w.grad = ref[n][1]
        group = next(k for k, v in groups.items() if n in {m for m, _ in v})
        if group == "matrix":
            lone = torch.optim.Muon([w], lr=0.05, weight_decay=0.1, momentum=0.95, nesterov=True,
                                    adjust_lr_fn="original")
        else:
            lr = 0.3 if group == "embed" else 0.02
            lone = torch.optim.AdamW([w], lr=lr, betas=o.betas, weight_decay=0.0)
        lone.step()
        torch.testing.assert_close(p.detach(), w.detach(), rtol=0, atol=0, msg=f"{n} ({group})")
    assert set(muon.state) == {p for g in muon.param_groups for p in g["params"]}
    assert all("momentum_buffer" in s for s in muon.state.values())
    assert all("exp_avg" in s for s in adamw.state.values()) and len(adamw.state) == sum(
        len(g["params"]) for g in adamw.param_groups)


def test_muon_and_adamw_state_round_trips():
    model = build_model(TINY, 30, 0)
    o = OptimConfig(name="muon", matrix_lr=0.05)
    opt = build_optimizer(o, model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state_dict()
    again = build_optimizer(o, model)
    assert isinstance(opt, MuonAdamW) and isinstance(again, MuonAdamW)
    again.load_state_dict(state)
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in opt.param_groups]
    assert again.param_groups[0] is again.parts[0].param_groups[0]  # groups still shared after loading
    buf = next(iter(again.parts[0].state.values()))["momentum_buffer"]
    torch.testing.assert_close(buf, next(iter(opt.parts[0].state.values()))["momentum_buffer"])


def test_muon_with_zero_sharding_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="optim.name 'muon' needs train.zero_stage 0"):
        RunConfig.model_validate({"optim": {"name": "muon"}, "train": {"zero_stage": 1}})


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_schedule_state_is_plain_and_loads_a_lambdalr_checkpoint():
    model = build_model(TINY, 30, 0)
    o = OptimConfig(warmup_steps=10)
    opt = build_optimizer(o, model)
    old = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    for _ in range(3):
        old.step()
    legacy = old.state_dict()  # what resume checkpoints written before this scheduler hold
    sched = Schedule(build_optimizer(o, model), o, 100)
    sched.load_state_dict(legacy)
    assert sched.last_epoch == 3 and not hasattr(sched, "lr_lambdas")
    assert isinstance(sched.state_dict()["o"], dict)
