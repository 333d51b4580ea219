"""Steps/s of ungrok's DeepSpeed training path vs a plain PyTorch loop doing the same updates.

Every loop runs the same model (default: the run default, 2 layers d64; ``--d-model``,
``--n-layers``, ``--n-ctx``, ``--batch`` for another shape), the same batches (packed budget on
the built-in ``web`` corpus, rows of ``n_ctx`` tokens, held on the device), the same loss, optimizer
and schedule (``runner.train.optim``), single process, 1 CPU thread, on one device (``--device``:
``auto`` is CUDA when torch sees a GPU). The plain loop clips the gradient norm at 1.0 as DeepSpeed
does by default (``gradient_clipping``), with DeepSpeed's arithmetic
(``runner.train.optim.clip_grad_norm``: plain torch ops), so both compute the same updates:
every engine's losses are compared with the plain loop's and the largest difference printed, not
asserted (ZeRO-1/2's have differed by float rounding even on a CPU; CUDA kernels need not be
deterministic; under bf16 ZeRO-1/2 reduce ``nn.Linear`` gradients in bf16). The DeepSpeed engines
are ungrok's own (``runner.train.loop.build_engine``, ZeRO stage 0, 1, 2). For the ``tl`` arch one
more plain loop runs with ``model.attention = "sdpa"`` (``runner.attention``: the fused kernel; the
ratio to the native plain loop is printed, and how far its losses drift from it).

``--precision`` is the same for every loop: ``fp32``, or ``bf16``, which the engines take from
``train.precision`` (DeepSpeed's ``torch_autocast``: its forward under ``torch.autocast(device,
bfloat16)``, weights in fp32) and the plain loop does the same way, its forward under the same
autocast; both take the loss in fp32 outside it, as the trainer does (``logits.float()``).

The machine may be shared, so the loops are timed in turns: every round runs :data:`BLOCK` steps
of each loop in a row, starting with a different loop each round (each loop keeps its own model
and optimizer), so load that drifts over seconds hits every loop alike; a ratio is DeepSpeed's
steps/s over plain's, both summed over the rounds. Each step reads its loss back (as the trainer
does); on CUDA the device is also synchronised before each block's clock is read at either end.

    python bench/train_throughput.py [--steps 300] [--warmup 20] [--device auto] [--precision fp32]
    python bench/train_throughput.py --d-model 512 --n-layers 8 --n-ctx 256 --batch 64 --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import ValidationError

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the packages (an uninstalled checkout), and bench/_table.py

from runner.config import RunConfig  # noqa: E402
from runner.data.corpora import build_corpus, load_corpus  # noqa: E402
from runner.data.streams import DataPlan  # noqa: E402
from runner.model import build_model, n_params  # noqa: E402
from runner.train.dist import ensure_process_group  # noqa: E402

BLOCK = 10  # steps per loop per round
FLAGS = {"story_tokens": "--n-ctx", "n_ctx": "--n-ctx", "d_model": "--d-model", "d_mlp": "--d-model",
         "model": "--d-model", "n_layers": "--n-layers", "batch_size": "--batch", "n_stories": "--batch"}


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else the CPU. The engines go where
    ``runner.train.dist.device()`` says (CUDA whenever it is visible), so ``cpu`` on a GPU machine
    needs CUDA hidden before it starts (``main`` does that for ``--device cpu``)."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "cpu")
    if name == "cuda" and not cuda:
        raise ValueError(f"--device cuda: torch {torch.__version__} sees no GPU; use --device cpu or auto")
    if name == "cpu" and cuda:
        raise ValueError("--device cpu: a GPU is visible and ungrok's engine would go there; "
                         "start with CUDA_VISIBLE_DEVICES= (the script's --device cpu does)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _autocast(dev: torch.device, precision: str):
    """What DeepSpeed's ``torch_autocast`` wraps the engine's forward in, for the plain loop."""
    if precision == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=True)
    return contextlib.nullcontext()


def _loss(logits, x, pad):
    logits = logits.float()  # the trainer's: bf16 under autocast, the loss in fp32 (a no-op in fp32)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), ignore_index=pad)


def plain_step(cfg, d_vocab, pad, dev: torch.device):
    """One update of a plain PyTorch loop: forward (under ``train.precision``'s autocast),
    backward, clip at 1.0, step, schedule."""
    from runner.train.loop import precision
    from runner.train.optim import Schedule, build_optimizer, clip_grad_norm

    model = build_model(cfg.model, d_vocab, cfg.train.seed).to(dev)
    opt = build_optimizer(cfg.optim, model)
    sched = Schedule(opt, cfg.optim, cfg.train.steps)
    params: list[torch.Tensor] = list(model.parameters())
    prec = precision(cfg)

    def step(x) -> float:
        with _autocast(dev, prec):
            logits = model(x)
        loss = _loss(logits, x, pad)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return float(loss.detach())
    return step


def deepspeed_step(cfg, d_vocab, pad, stage, dev: torch.device):
    """One update through ungrok's DeepSpeed engine at ZeRO ``stage``."""
    from runner.train.loop import build_engine

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"zero_stage": stage})})
    engine, _ = build_engine(cfg, build_model(cfg.model, d_vocab, cfg.train.seed), 1)
    where = next(engine.parameters()).device
    if where.type != dev.type:
        raise RuntimeError(f"the ZeRO-{stage} engine's model is on {where}, not {dev}: the comparison would be unfair")

    def step(x) -> float:
        loss = _loss(engine(x), x, pad)
        engine.backward(loss)
        engine.step()
        return float(loss.detach())
    return step


def run_in_turns(loops: dict, batch, steps: int, warmup: int, dev: torch.device | None = None) -> tuple[dict, dict]:
    """Warm every loop up, then time ``steps`` more in rounds of :data:`BLOCK`; returns (block
    times per loop, losses per loop). On CUDA the device is synchronised before each clock read."""
    dev = dev or torch.device("cpu")
    times: dict = {k: [] for k in loops}
    losses: dict = {k: [f(batch(s)) for s in range(warmup)] for k, f in loops.items()}
    names = list(loops)
    for r, start in enumerate(range(warmup, warmup + steps, BLOCK)):
        for k in names[r % len(names):] + names[:r % len(names)]:  # rotated: no loop always runs first
            f = loops[k]
            _sync(dev)
            t0 = time.perf_counter()
            losses[k] += [f(batch(s)) for s in range(start, min(start + BLOCK, warmup + steps))]
            _sync(dev)
            times[k].append(time.perf_counter() - t0)
    return times, losses


def bench_config(total: int, precision: str = "fp32", d_model: int | None = None, n_layers: int | None = None,
                 n_ctx: int | None = None, batch: int | None = None) -> RunConfig:
    """The run default, reshaped by whichever of the overrides is given (``d_mlp`` = 4 x
    ``d_model``, rows of ``n_ctx`` tokens), ``total`` steps of the ``web`` corpus, 1 thread."""
    base = RunConfig()
    d = d_model or base.model.d_model
    model = {"d_model": d, "d_mlp": 4 * d if d_model else base.model.d_mlp,
             "n_layers": n_layers or base.model.n_layers, "n_ctx": n_ctx or base.model.n_ctx}
    b = batch or base.train.batch_size
    rows = n_ctx or base.corpus.story_tokens
    return RunConfig.model_validate({
        "corpus": {"name": "web", "n_stories": total * b, "story_tokens": rows}, "model": model,
        "train": {"steps": total, "threads": 1, "batch_size": b, "precision": precision}})


def measure(steps: int = 300, warmup: int = 20, stages: tuple[int, ...] = (0, 1, 2), device: str = "auto",
            precision: str = "fp32", **shape) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring).
    ``shape``: ``d_model``, ``n_layers``, ``n_ctx``, ``batch`` overrides (:func:`bench_config`)."""
    torch.set_num_threads(1)
    dev = pick_device(device)
    total = steps + warmup
    cfg = bench_config(total, precision, **shape)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = load_corpus(build_corpus(cfg.corpus, tmp))
    rows = torch.from_numpy(corpus.rows.copy()).to(dev)
    d_vocab = corpus.manifest["vocab_size"]
    plan = DataPlan.for_budget("packed", corpus.rows, corpus.pad_id, total, cfg.train.batch_size, 0, 1)
    ensure_process_group()
    loops = {"plain": plain_step(cfg, d_vocab, corpus.pad_id, dev)}
    loops |= {f"zero{s}": deepspeed_step(cfg, d_vocab, corpus.pad_id, s, dev) for s in stages}
    if cfg.model.arch == "tl":  # the same plain loop with model.attention = "sdpa" (runner.attention)
        fused = cfg.model_copy(update={"model": cfg.model.model_copy(update={"attention": "sdpa"})})
        loops["sdpa"] = plain_step(fused, d_vocab, corpus.pad_id, dev)
    times, losses = run_in_turns(loops, lambda s: rows[plan.indices(s)].long(), steps, warmup, dev)
    return _rows(cfg, dev, n_params(build_model(cfg.model, d_vocab, 0)), steps, stages, times, losses)


def _where(cfg: RunConfig, dev: torch.device) -> str:
    """The device, precision and software, for the conditions column."""
    from runner.train.loop import precision

    if dev.type == "cuda":
        return (f"{torch.cuda.get_device_name(dev)}, {precision(cfg)}, torch {torch.__version__} "
                f"CUDA {torch.version.cuda}")
    return f"CPU, {precision(cfg)}, torch {torch.__version__}"


def _max_diff(losses: dict, loop: str) -> float:
    """The largest |loss difference| between ``loop`` and the plain loop, step by step."""
    return max(abs(a - b) for a, b in zip(losses[loop], losses["plain"]))


def _rows(cfg: RunConfig, dev: torch.device, n: int, steps: int, stages, times: dict, losses: dict) -> list[dict]:
    m, default = cfg.model, RunConfig().model
    tokens = cfg.train.batch_size * cfg.corpus.story_tokens
    plain = steps / sum(times["plain"])
    shape = ("default model" if (m.d_model, m.n_layers, m.n_ctx) == (default.d_model, default.n_layers, default.n_ctx)
             else f"model ({m.n_layers} layers d{m.d_model}, ctx {m.n_ctx})")
    cond = (f"{_where(cfg, dev)}; {n:,}-param {shape}, batch {cfg.train.batch_size}x{cfg.corpus.story_tokens}, "
            f"1 thread, {steps} timed steps in turns of {BLOCK}, AdamW + schedule + clip 1.0")
    out = [{"figure": "plain PyTorch steps/s", "value": f"{plain:.2f}",
            "conditions": f"{cond}; {plain * tokens:,.0f} tokens/s"}]
    for s in stages:
        t = times[f"zero{s}"]
        ratio = sum(times["plain"]) / sum(t)
        diff = _max_diff(losses, f"zero{s}")
        same = "losses identical to plain" if diff == 0 else f"losses differ from plain (max |d| {diff:.1e})"
        out.append({"figure": f"DeepSpeed ZeRO-{s} / plain PyTorch steps/s", "value": f"{ratio:.3f}",
                    "conditions": f"same run, in turns; {steps / sum(t):.2f} steps/s; {same}"})
    if "sdpa" in times:
        t = times["sdpa"]
        diff = _max_diff(losses, "sdpa")
        out.append({"figure": "plain PyTorch, model.attention sdpa / native steps/s",
                    "value": f"{sum(times['plain']) / sum(t):.3f}",
                    "conditions": f"same run, in turns; {steps / sum(t):.2f} steps/s; the fused kernel rounds "
                                  f"differently: losses differ from native by up to {diff:.1e} over the timed steps"})
    return out


def _count(least: int):
    def parse(v: str) -> int:
        if not v.isdigit() or int(v) < least:
            raise argparse.ArgumentTypeError(f"{v!r}: use a whole number >= {least}")
        return int(v)
    return parse


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", type=_count(1), default=300)
    ap.add_argument("--warmup", type=_count(0), default=20)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if available")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="every loop's (train.precision)")
    for k in ("d_model", "n_layers", "n_ctx", "batch"):
        ap.add_argument(f"--{k.replace('_', '-')}", dest=k, type=_count(1), default=None, help="override the default")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA starts: the engines follow torch's view
    shape = {k: getattr(args, k) for k in ("d_model", "n_layers", "n_ctx", "batch")}
    try:  # bad input fails here, in one line, before the corpus is built
        pick_device(args.device)
        bench_config(args.steps + args.warmup, args.precision, **shape)
    except ValueError as e:  # pydantic's ValidationError is one: its first error
        errs = e.errors() if isinstance(e, ValidationError) else None
        loc = errs[0]["loc"] if errs else ()
        flag = next((FLAGS[k] for k in reversed(loc) if k in FLAGS), "the shape flags")
        ap.error(f"{'.'.join(map(str, loc))}: {errs[0]['msg']}; change {flag}" if errs else str(e))
    rows = measure(args.steps, args.warmup, device=args.device, precision=args.precision, **shape)
    from _table import print_rows

    print_rows(rows)
    if args.out:
        from runner._io import write_json_atomic

        write_json_atomic(args.out, {"bench": "train_throughput", "argv": sys.argv[1:], "rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
