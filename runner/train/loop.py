"""The DeepSpeed training job: one run from a :class:`RunConfig`, checkpointed, scored, resumable.

At every scheduled step t (after t updates) the job, in this order: scores the probe battery and
appends the row to the zarr store, saves the model weights (safetensors, kept for every t), and
saves a full DeepSpeed checkpoint (model + optimizer + scheduler, the last ``keep_resume`` kept).
A run killed at any point and started again loads the newest DeepSpeed checkpoint, truncates the
store to it, and continues; since the batch at step t is a pure function of t (see ``data.py``),
it ends on the same numbers as an uninterrupted run.

Multi-GPU: the same function runs under ``deepspeed --num_gpus N -m cluster.cli train ...``;
each rank takes its slice of every step's batch (global batch unchanged), rank 0 scores and
writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runner._io import write_json_atomic
from runner.config import RunConfig
from runner.data.corpora import load_corpus
from runner.data.streams import DataPlan, Streams, build_streams
from runner.model import build_model, n_params, save_weights, weights_path
from runner.scoring import aggregate, battery_for, continuation_logprobs, encode_battery
from runner.store import RunStore, group_complete
from runner.train.dist import device, ensure_process_group
from runner.train.monitor import Monitor, TrendConfig, frozen_probe_set
from runner.trajectory import write_summary
from runner.world import vocab as V


def prepare_run(cfg: RunConfig, out: str | Path) -> Path:
    """Validate everything that can be checked before training and create the run folder.

    Bad input (unknown corpus, impossible budget, malformed battery) raises here, before any
    file of the run is written. Returns the run directory.
    """
    out = Path(out)
    battery_for(cfg)  # raises on a malformed battery before anything is written
    run_dir = out / cfg.run_id
    cfg_json = cfg.model_dump(mode="json")
    if (run_dir / "config.json").exists():
        if json.loads((run_dir / "config.json").read_text()) != cfg_json:
            raise ValueError(f"{run_dir} holds a different config; its id should have differed (corrupt folder?)")
    return run_dir


def _lr_lambda(warmup: int):
    return lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0


def train_run(cfg: RunConfig, out: str | Path, *, progress: bool = True, stop_at: int | None = None,
              log=print, corpora_dir: str | Path | None = None, store_root: str | Path | None = None,
              watch: tuple[str, ...] = (), trend=None, on_warning=None) -> Path:
    """Train (or resume, or skip if complete) the run ``cfg`` under ``out``; returns its folder.

    ``corpora_dir``: where corpora are built/reused (default ``<out>/corpora``).
    ``store_root``: a shared zarr store (a sweep's); the run writes only its group
    ``runs/<run_id>`` there. Default: ``<run_dir>/store.zarr``.
    ``stop_at``: return after the checkpoint at that step (used by tests to simulate a kill).
    ``watch``: rule families a live :class:`runner.monitor.Monitor` watches (``trend``: its
    :class:`runner.monitor.TrendConfig`); its warnings are logged, stored as events in the run's
    store and passed to ``on_warning``.
    """
    import deepspeed

    torch.set_num_threads(cfg.train.threads)
    out = Path(out)
    run_dir = prepare_run(cfg, out)
    items = battery_for(cfg)
    base_path, dosed_path = build_streams(cfg, Path(corpora_dir) if corpora_dir else out / "corpora")
    corpus = load_corpus(base_path)
    tok = corpus.tokenizer
    d_vocab = tok.get_vocab_size()
    model = build_model(cfg.model, d_vocab, cfg.train.seed)
    plan = DataPlan.for_budget(cfg.train.budget, corpus.rows, corpus.pad_id, cfg.train.steps,
                               cfg.train.batch_size, cfg.train.seed, n_params(model))
    # A dosed run reads the intervened stream at the steps of its window, the corpus elsewhere;
    # both plans are pure functions of the step, so resume stays exact.
    dosed = load_corpus(dosed_path) if dosed_path else None
    streams = Streams(corpus.rows, plan)
    if dosed:
        streams = Streams(corpus.rows, plan, dosed.rows, DataPlan.for_budget(
            cfg.train.budget, dosed.rows, dosed.pad_id, cfg.train.steps, cfg.train.batch_size, cfg.train.seed,
            n_params(model)), cfg.intervention.active)

    rank, world = ensure_process_group()
    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} must be divisible by the world size {world}")
    micro = cfg.train.batch_size // world
    if store_root is not None:
        store_path, group = Path(store_root).resolve(), f"runs/{cfg.run_id}"
    else:
        store_path, group = run_dir / "store.zarr", ""
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.json").exists():
            write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
        write_json_atomic(run_dir / "run.json", {
            "run_id": cfg.run_id, "d_vocab": d_vocab, "n_params": n_params(model),
            "corpus_path": str(corpus.path), "corpus_sha256": corpus.manifest["sha256"],
            **({"intervened_corpus_path": str(dosed.path), "intervened_corpus_sha256": dosed.manifest["sha256"],
                "intervention_window": [cfg.intervention.start_step, cfg.intervention.end_step]} if dosed else {}),
            "unique_rows": plan.unique_rows, "tokens_per_step": cfg.train.batch_size * corpus.manifest["row_tokens"],
            "world_size": world,
            "store": {"path": os.path.relpath(store_path, run_dir.resolve() if store_root else run_dir),
                      "group": group},
        })
        shutil.copy(corpus.path / "tokenizer.json", run_dir / "tokenizer.json")
    if group_complete(store_path, group):  # read-only: every rank decides the same way
        log(f"{cfg.run_id}: already complete, skipping")
        return run_dir
    store = RunStore(store_path, group) if rank == 0 else None

    dev = device()
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.optim.warmup_steps))
    ds_config = {
        "train_batch_size": cfg.train.batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": cfg.train.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_config)

    ckpt_dir = run_dir / "checkpoints"
    start = 0
    latest = ckpt_dir / "latest"
    if latest.exists():
        _, client = engine.load_checkpoint(str(ckpt_dir))
        start = int(client["step"])
        if store is not None:
            store.truncate(start)
        log(f"{cfg.run_id}: resumed from step {start}")

    enc = encode_battery(items, tok, tok.token_to_id(V.BOS), cfg.model.n_ctx, pad_id=corpus.pad_id)
    metric_names = sorted(aggregate(items, np.zeros(len(items)) + 1, np.zeros(len(items))))
    if store is not None:
        store.init_layout(items, metric_names, {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json")})
    monitor = None
    if watch and store is not None:

        monitor = Monitor(frozen_probe_set(items, watch), tok, tok.token_to_id(V.BOS), cfg.model.n_ctx,
                          pad_id=corpus.pad_id, trend=trend or TrendConfig(), on_warning=on_warning, store=store, log=log)
    schedule = set(cfg.schedule.steps(cfg.train.steps))
    loss_sum, loss_n = 0.0, 0
    bar = _progress(progress and rank == 0, cfg, start)
    # Wall seconds per phase of this process's loop (a resumed run counts only its own part):
    # scoring (probe log-probs + store append), checkpointing (weights + DeepSpeed resume state).
    phase = {"score_seconds": 0.0, "checkpoint_seconds": 0.0}
    t0 = time.time()
    try:
        for step in range(start, cfg.train.steps + 1):
            if step in schedule and not (step == start and start > 0):
                loss = loss_sum / loss_n if loss_n else float("nan")
                loss_sum, loss_n = 0.0, 0
                if rank == 0:
                    ts = time.time()
                    lpc, lpd = continuation_logprobs(engine.module, enc)
                    metrics = aggregate(items, lpc, lpd)
                    store.append(step, loss, sched.get_last_lr()[0], items, lpc, lpd, metrics)
                    tc = time.time()
                    phase["score_seconds"] += tc - ts
                    save_weights(engine.module, weights_path(run_dir, step))
                    phase["checkpoint_seconds"] += time.time() - tc
                    if bar:
                        bar.show(step, loss, metrics)
                tc = time.time()
                _save_resume(engine, ckpt_dir, step, cfg.schedule.keep_resume, rank)
                phase["checkpoint_seconds"] += time.time() - tc
                if stop_at is not None and step >= stop_at:
                    return run_dir
            if monitor is not None:
                monitor.observe(step, engine.module)
            if step == cfg.train.steps:
                break
            x = torch.from_numpy(streams.batch(step, rank * micro, (rank + 1) * micro)).long().to(dev)
            logits = engine(x)
            loss_t = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                     ignore_index=corpus.pad_id)
            engine.backward(loss_t)
            engine.step()
            loss_sum += float(loss_t.detach())
            loss_n += 1
            if bar:
                bar.advance()
    finally:
        if bar:
            bar.close()
    if rank == 0:
        total = time.time() - t0
        step_s = total - phase["score_seconds"] - phase["checkpoint_seconds"]
        store.mark_complete(train_seconds=round(total, 2), step_seconds=round(step_s, 2),
                            **{k: round(v, 2) for k, v in phase.items()})

        write_summary(run_dir)
    return run_dir


def _save_resume(engine, ckpt_dir: Path, step: int, keep: int, rank: int) -> None:
    """DeepSpeed checkpoint with tag ``step<N>``; older tags beyond ``keep`` are removed."""
    engine.save_checkpoint(str(ckpt_dir), tag=f"step{step:07d}", client_state={"step": step})
    if rank == 0:
        tags = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir())
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


class _Bar:
    """A rich progress bar with the watched family's conflict accuracy and margin."""

    def __init__(self, cfg: RunConfig, start: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.fam = cfg.probes.families[0]
        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.p.start()
        self.task = self.p.add_task(cfg.run_id, total=cfg.train.steps, completed=start, info="")

    def advance(self) -> None:
        self.p.advance(self.task)

    def show(self, step: int, loss: float, metrics: dict) -> None:
        acc = metrics.get(f"{self.fam}/acc_conflict_heldout", math.nan)
        cm = metrics.get(f"{self.fam}/cm", math.nan)
        self.p.update(self.task, info=f"loss {loss:.3f}  {self.fam} conflict {acc:.2f}  CM {cm:+.2f}")

    def close(self) -> None:
        self.p.stop()


def _progress(on: bool, cfg: RunConfig, start: int) -> _Bar | None:
    return _Bar(cfg, start) if on else None
