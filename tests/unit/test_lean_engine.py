"""The single-process ZeRO-0 engine (runner.train.dist.lean_single_process) computes the same
numbers as DeepSpeed's own path, bit for bit: same losses, same weights, clipping exercised; and
a group of one never builds DeepSpeed's shared-memory op."""

import deepspeed
import torch
import torch.nn.functional as F

from runner.model import build_model
from runner.train.dist import device, ensure_process_group
from runner.train.loop import build_engine
from runner.train.optim import Schedule, build_optimizer
from tests.helpers import tiny_run_config

VOCAB = 50


def _stock_engine(cfg):
    """DeepSpeed's engine as build_engine made it before the lean path (no overrides)."""
    model = build_model(cfg.model, VOCAB, cfg.train.seed)
    opt = build_optimizer(cfg.optim, model)
    sched = Schedule(opt, cfg.optim, cfg.train.steps)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,  # pyright: ignore
                                      config={"train_batch_size": cfg.train.batch_size,
                                              "train_micro_batch_size_per_gpu": cfg.train.batch_size,
                                              "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 0},
                                              "steps_per_print": 10**9, "wall_clock_breakdown": False})
    return engine


def _train(engine, batches):
    losses = []
    for x in batches:
        x = x.to(device())
        logits = engine(x).float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


def test_lean_engine_matches_deepspeed_bit_for_bit():
    torch.set_num_threads(1)
    assert ensure_process_group() == (0, 1)
    import deepspeed.comm.comm as dcomm

    assert dcomm.cdb.shm_comm_op is None  # nothing compiled for a group of one
    cfg = tiny_run_config(train={"steps": 12}, optim={"lr": 3e-2})
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (cfg.train.batch_size, 32), generator=g) for _ in range(12)]
    lean, _ = build_engine(cfg, build_model(cfg.model, VOCAB, cfg.train.seed), 1)
    assert lean.enable_backward_allreduce is False
    norms = []
    clip = lean.clip_fp32_gradients
    lean.clip_fp32_gradients = lambda: norms.append(float(clip()))
    stock = _stock_engine(cfg)
    assert stock.enable_backward_allreduce is True
    assert _train(lean, batches) == _train(stock, batches)
    assert max(norms) > 1.0  # clipping scaled some steps' gradients
    for (n, a), (_, b) in zip(lean.module.state_dict().items(), stock.module.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    assert all(p.grad is None for p in lean.module.parameters())  # zero_grad ran
