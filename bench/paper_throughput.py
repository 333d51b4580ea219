"""Training tokens/s and MFU of a run preset's model through ungrok's DeepSpeed engine, written as
the measured throughput file that ``ungrok plan`` reads.

The engine is the trainer's own (``runner.train.loop.build_engine``: the preset's optimizer,
schedule and precision; bf16 autocast on CUDA under ``precision = auto``); batches are random
token rows of the model's context length (the data loader and probe scoring are not timed).
Timed: ``--steps`` updates after ``--warmup`` untimed ones, the device synchronised at both ends.
MFU = achieved model FLOP/s (tokens/s x ``runner.model.flops_per_token``) / the device's peak
(``--peak-tflops``; known for H100/H200/A100 in bf16; none on a CPU, so no MFU there).

    python bench/paper_throughput.py                              # the paper's model, on this device
    python bench/paper_throughput.py --d-model 32 --n-ctx 64 --batch 8 --steps 5   # a CPU smoke check

Writes ``--out`` (default ``bench/throughput.json``; ``ungrok plan`` reads that file by default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the packages, and bench/_table.py

from runner._io import utcnow, write_json_atomic  # noqa: E402
from runner.config import RunConfig  # noqa: E402
from runner.grid import RUN_PRESETS  # noqa: E402
from runner.model import build_model, count_params, flops_per_token, model_vocab  # noqa: E402
from runner.train.dist import device, ensure_process_group  # noqa: E402
from runner.train.loop import build_engine, precision  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # dense, NVIDIA datasheets


def config(args) -> RunConfig:
    sec = RUN_PRESETS.get(args.preset).sections_for("", args.arm)
    shape = {k: v for k, v in (("n_layers", args.n_layers), ("d_model", args.d_model), ("n_ctx", args.n_ctx),
                              ("d_mlp", args.d_mlp), ("d_vocab", args.d_vocab)) if v is not None}
    sec["model"] = {**sec["model"], **shape}
    sec["corpus"] = {**sec["corpus"], "story_tokens": sec["model"]["n_ctx"]}
    sec["train"] = {**sec["train"], "batch_size": args.batch or sec["train"].get("batch_size", 32),
                    "steps": args.warmup + args.steps, "threads": args.threads,
                    **({"precision": args.precision} if args.precision else {})}
    return RunConfig.model_validate(sec)


def peak_flops(args, dev) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def measure(args) -> dict:
    cfg = config(args)
    torch.set_num_threads(cfg.train.threads)
    _, world = ensure_process_group()
    vocab = model_vocab(cfg.model, cfg.model.d_vocab or 8192)
    engine, _ = build_engine(cfg, build_model(cfg.model, vocab, 0), world)
    dev = device()
    g = torch.Generator().manual_seed(0)
    batch, seq = cfg.train.batch_size, cfg.model.n_ctx
    xs = [torch.randint(0, vocab, (batch, seq), generator=g).to(dev) for _ in range(min(8, args.steps))]

    def step(i: int) -> None:
        x = xs[i % len(xs)]
        logits = engine(x).float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        engine.backward(loss)
        engine.step()

    for i in range(args.warmup):
        step(i)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    sync()
    seconds = time.perf_counter() - t0
    tps = batch * seq * args.steps / seconds
    fpt = flops_per_token(cfg.model, vocab, seq)
    peak = peak_flops(args, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({cfg.train.threads} thread(s))"
    return {"device": name, "precision": precision(cfg), "preset": args.preset, "arm": args.arm,
            "model": cfg.model.model_dump(mode="json"), "params": count_params(cfg.model, vocab)["total"],
            "batch": batch, "seq_len": seq, "steps": args.steps, "seconds": round(seconds, 3),
            "tokens_per_second": tps, "flops_per_token": fpt, "achieved_flops_per_second": tps * fpt,
            "peak_flops": peak, "mfu": tps * fpt / peak if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
            "measured": utcnow(timespec="seconds"), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--arm", default="tinystories")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="rows per step (default: the preset's)")
    for k in ("n_layers", "d_model", "n_ctx", "d_mlp", "d_vocab"):
        ap.add_argument(f"--{k.replace('_', '-')}", dest=k, type=int, default=None, help="override the preset's")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak (default: by GPU name)")
    ap.add_argument("--out", type=Path, default=HERE / "throughput.json")
    args = ap.parse_args()
    m = measure(args)
    write_json_atomic(args.out, m)
    from _table import print_rows

    mfu = f"{m['mfu']:.1%}" if m["mfu"] is not None else "n/a (no peak for this device)"
    cond = (f"{m['device']}, {m['precision']}, {m['params']:,}-param {m['model']['arch']} model, batch "
            f"{m['batch']}x{m['seq_len']}, {m['steps']} timed steps in {m['seconds']} s")
    print_rows([{"figure": "training tokens/s (DeepSpeed engine)", "value": f"{m['tokens_per_second']:,.0f}",
                 "conditions": cond},
                {"figure": "model FLOP/s achieved", "value": f"{m['achieved_flops_per_second']:.3g}",
                 "conditions": f"{m['flops_per_token']:.4g} FLOPs/token (6N + 12 L d T); MFU {mfu}"}])
    print(f"wrote {args.out} (ungrok plan reads it: --measured {args.out})")


if __name__ == "__main__":
    main()
