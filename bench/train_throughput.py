"""Steps/s of the DeepSpeed training path vs a plain PyTorch loop on the same model and data.

Both loops run the same model (default: the run default, 2 layers d64), the same batches
(packed budget on the built-in ``web`` corpus) and the same loss, single process, 1 thread.
Prints steps/s, tokens/s and the ratio DeepSpeed / plain for ZeRO stages 0, 1, 2.

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


def _loss(model, x, pad):
    logits = model(x)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), ignore_index=pad)


def time_plain(cfg, rows, plan, pad, steps, warmup, d_vocab):
    model = build_model(cfg.model, d_vocab, cfg.train.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    for s in range(warmup + steps):
        if s == warmup:
            t0 = time.perf_counter()
        loss = _loss(model, rows[plan.indices(s)].long(), pad)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return steps / (time.perf_counter() - t0)


def time_deepspeed(cfg, rows, plan, pad, steps, warmup, d_vocab, stage):
    import deepspeed

    model = build_model(cfg.model, d_vocab, cfg.train.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config={
        "train_batch_size": cfg.train.batch_size, "train_micro_batch_size_per_gpu": cfg.train.batch_size,
        "zero_optimization": {"stage": stage}, "steps_per_print": 10**9})
    for s in range(warmup + steps):
        if s == warmup:
            t0 = time.perf_counter()
        loss = _loss(engine, rows[plan.indices(s)].long(), pad)
        engine.backward(loss)
        engine.step()
    return steps / (time.perf_counter() - t0)


def measure(steps: int = 300, warmup: int = 20, stages: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    torch.set_num_threads(1)
    total = steps + warmup
    cfg = RunConfig(corpus={"name": "web", "n_stories": total * 32}, train={"steps": total})
    with tempfile.TemporaryDirectory() as tmp:
        corpus = load_corpus(build_corpus(cfg.corpus, tmp))
    rows = torch.from_numpy(corpus.rows)
    d_vocab = corpus.manifest["vocab_size"]
    plan = DataPlan.for_budget("packed", corpus.rows, corpus.pad_id, total, 32, 0, 1)
    ensure_process_group()
    tokens = cfg.train.batch_size * cfg.corpus.story_tokens
    n = n_params(build_model(cfg.model, d_vocab, 0))
    plain = time_plain(cfg, rows, plan, corpus.pad_id, steps, warmup, d_vocab)
    cond = (f"{n:,}-param default model, batch {cfg.train.batch_size}x{cfg.corpus.story_tokens}, 1 thread, "
            f"{steps} timed steps")
    out = [{"figure": "plain PyTorch steps/s", "value": f"{plain:.2f}",
            "conditions": f"{cond}; {plain * tokens:,.0f} tokens/s"}]
    for stage in stages:
        ds = time_deepspeed(cfg, rows, plan, corpus.pad_id, steps, warmup, d_vocab, stage)
        out.append({"figure": f"DeepSpeed ZeRO-{stage} / plain PyTorch steps/s", "value": f"{ds / plain:.3f}",
                    "conditions": f"same run, same model and batches; {ds:.2f} steps/s"})
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
