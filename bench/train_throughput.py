"""Steps/s of ungrok's DeepSpeed training path vs a plain PyTorch loop doing the same updates.

Every loop runs the same model (default: the run default, 2 layers d64), the same batches (packed
budget on the built-in ``web`` corpus), the same loss, optimizer and schedule
(``runner.train.optim``), single process, 1 thread. The plain loop clips the gradient norm at 1.0
as DeepSpeed does by default (``gradient_clipping``), with DeepSpeed's arithmetic
(``runner.train.optim.clip_grad_norm``: plain torch ops), so both compute the same updates:
every engine's losses are compared with the plain loop's, bit for bit, and the result printed. The DeepSpeed
engines are ungrok's own (``runner.train.loop.build_engine``, ZeRO stage 0, 1, 2).

The machine is shared, so the loops are timed in turns: every round runs :data:`BLOCK` steps of
each loop in a row, starting with a different loop each round (each loop keeps its own model and
optimizer), so load that drifts over seconds hits every loop alike; a ratio is DeepSpeed's steps/s
over plain's, both summed over the rounds.

    python bench/train_throughput.py [--steps 300] [--warmup 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from runner.config import RunConfig
from runner.data.corpora import build_corpus, load_corpus
from runner.data.streams import DataPlan
from runner.model import build_model, n_params
from runner.train.dist import ensure_process_group

BLOCK = 10  # steps per loop per round


def _loss(model, x, pad):
    logits = model(x)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), ignore_index=pad)


def plain_step(cfg, d_vocab, pad):
    """One update of a plain PyTorch loop: forward, backward, clip at 1.0, step, schedule."""
    from runner.train.optim import Schedule, build_optimizer, clip_grad_norm

    model = build_model(cfg.model, d_vocab, cfg.train.seed)
    opt = build_optimizer(cfg.optim, model)
    sched = Schedule(opt, cfg.optim, cfg.train.steps)
    params = list(model.parameters())

    def step(x) -> float:
        loss = _loss(model, x, pad)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return float(loss.detach())
    return step


def deepspeed_step(cfg, d_vocab, pad, stage):
    """One update through ungrok's DeepSpeed engine at ZeRO ``stage``."""
    from runner.train.loop import build_engine

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"zero_stage": stage})})
    engine, _ = build_engine(cfg, build_model(cfg.model, d_vocab, cfg.train.seed), 1)

    def step(x) -> float:
        loss = _loss(engine, x, pad)
        engine.backward(loss)
        engine.step()
        return float(loss.detach())
    return step


def run_in_turns(loops: dict, batch, steps: int, warmup: int) -> tuple[dict, dict]:
    """Warm every loop up, then time ``steps`` more in rounds of :data:`BLOCK`; returns (block
    times per loop, losses per loop)."""
    times: dict = {k: [] for k in loops}
    losses: dict = {k: [f(batch(s)) for s in range(warmup)] for k, f in loops.items()}
    names = list(loops)
    for r, start in enumerate(range(warmup, warmup + steps, BLOCK)):
        for k in names[r % len(names):] + names[:r % len(names)]:  # rotated: no loop always runs first
            f = loops[k]
            t0 = time.perf_counter()
            losses[k] += [f(batch(s)) for s in range(start, min(start + BLOCK, warmup + steps))]
            times[k].append(time.perf_counter() - t0)
    return times, losses


def measure(steps: int = 300, warmup: int = 20, stages: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    torch.set_num_threads(1)
    total = steps + warmup
    cfg = RunConfig(corpus={"name": "web", "n_stories": total * 32}, train={"steps": total, "threads": 1})
    with tempfile.TemporaryDirectory() as tmp:
        corpus = load_corpus(build_corpus(cfg.corpus, tmp))
    rows = torch.from_numpy(corpus.rows.copy())
    d_vocab = corpus.manifest["vocab_size"]
    plan = DataPlan.for_budget("packed", corpus.rows, corpus.pad_id, total, cfg.train.batch_size, 0, 1)
    ensure_process_group()
    loops = {"plain": plain_step(cfg, d_vocab, corpus.pad_id)}
    loops |= {f"zero{s}": deepspeed_step(cfg, d_vocab, corpus.pad_id, s) for s in stages}
    times, losses = run_in_turns(loops, lambda s: rows[plan.indices(s)].long(), steps, warmup)
    tokens = cfg.train.batch_size * cfg.corpus.story_tokens
    n = n_params(build_model(cfg.model, d_vocab, 0))
    plain = steps / sum(times["plain"])
    cond = (f"{n:,}-param default model, batch {cfg.train.batch_size}x{cfg.corpus.story_tokens}, 1 thread, "
            f"{steps} timed steps in turns of {BLOCK}, AdamW + schedule + clip 1.0")
    out = [{"figure": "plain PyTorch steps/s", "value": f"{plain:.2f}",
            "conditions": f"{cond}; {plain * tokens:,.0f} tokens/s"}]
    for s in stages:
        t = times[f"zero{s}"]
        ratio = sum(times["plain"]) / sum(t)
        diff = max(abs(a - b) for a, b in zip(losses[f"zero{s}"], losses["plain"]))
        same = "losses identical to plain" if diff == 0 else f"losses differ from plain (max |d| {diff:.1e})"
        out.append({"figure": f"DeepSpeed ZeRO-{s} / plain PyTorch steps/s", "value": f"{ratio:.3f}",
                    "conditions": f"same run, in turns; {steps / sum(t):.2f} steps/s; {same}"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    from _table import print_rows

    print_rows(measure(args.steps, args.warmup))


if __name__ == "__main__":
    main()
