"""The DeepSpeed training job: one run from a :class:`RunConfig`, checkpointed, scored, resumable.

At every scheduled step t (after t updates) the job, in this order: scores the probe battery and
appends the row to the zarr store, saves the model weights (safetensors, kept for every t), and
saves a full DeepSpeed checkpoint (model + optimizer + scheduler, the last ``keep_resume`` kept).
A run killed at any point and started again loads the newest DeepSpeed checkpoint, truncates the
store to it, and continues; since the batch at step t is a pure function of t (see
``runner.data.streams``), it ends on the same numbers as an uninterrupted run. The folder's
layout is ``runner.store.RunDir``.

The loop itself only steps the model; each of those features is a callback
(``runner.train.callbacks``), and a caller adds its own (``StopAt``, the live monitor's
``runner.train.monitor.monitor_callback``) through ``callbacks=``.

Multi-GPU: the same function runs under ``deepspeed --num_gpus N -m cluster.cli train ...``;
each rank takes its slice of every step's batch (global batch unchanged), rank 0 scores and
writes.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from runner._io import write_json_atomic
from runner.config import RunConfig
from runner.data.corpora import Corpus, load_corpus, world_tokenizer
from runner.data.streams import DataPlan, Streams, build_streams
from runner.model import build_model, model_vocab, n_params
from runner.scoring import battery_for, check_unknown, encode_battery, training_bos
from runner.store import RunDir, RunStore, group_complete
from runner.train.callbacks import Callbacks, TrainCallback, TrainContext, default_callbacks
from runner.train.dist import device, ensure_process_group, lean_single_process
from runner.train.optim import Schedule, build_optimizer
from runner.world.batteries import check_cells


def prepare_run(cfg: RunConfig, out: str | Path) -> Path:
    """Validate everything that can be checked before training and create the run folder.

    Bad input (unknown corpus, impossible budget, malformed battery) raises here, before any
    file of the run is written. Returns the run directory.
    """
    check_probes(cfg)
    run = RunDir(Path(out) / cfg.run_id)
    # validated first: a field added since the folder was made reads as its default (ids unchanged)
    if run.config.exists() and RunConfig.model_validate_json(run.config.read_text()) != cfg:
        raise ValueError(f"{run.path} holds a different config; its id should have differed (corrupt folder?)")
    return run.path


def check_probes(cfg: RunConfig) -> None:
    """Refuse a malformed battery, or one the built-in world's tokenizer (known before its corpus
    is built) leaves mostly unknown; other corpora are checked once built, before the run starts."""
    items = battery_for(cfg)
    check_cells(items, cfg.probes.battery or "probes")  # heldout conflict and agree items in every family
    if cfg.corpus.is_world:
        tok = world_tokenizer(cfg.corpus.name)  # the preset's vocabulary (a/an presets add words)
        check_unknown(encode_battery(items, tok, None, cfg.model.n_ctx), cfg.probes.max_unknown, "probes.battery")


def train_run(cfg: RunConfig, out: str | Path, *, callbacks: Sequence[TrainCallback] = (), progress: bool = True,
              log=print, corpora_dir: str | Path | None = None, store_root: str | Path | None = None) -> Path:
    """Train (or resume, or skip if complete) the run ``cfg`` under ``out``; returns its folder.

    ``callbacks``: added after the defaults (score, save weights, save resume state, time the
    phases, write the summary, and a progress bar if ``progress``), e.g. ``[StopAt(40)]``.
    ``corpora_dir``: where corpora are built/reused (default ``<out>/corpora``).
    ``store_root``: a shared zarr store (a sweep's); the run writes only its group
    ``runs/<run_id>`` there. Default: ``<run_dir>/store.zarr``.
    """
    torch.set_num_threads(cfg.train.threads)
    out = Path(out)
    run = RunDir(prepare_run(cfg, out))
    corpus, dosed = _load_corpora(cfg, Path(corpora_dir) if corpora_dir else out / "corpora", log if progress else None)
    tok = corpus.tokenizer
    bos_id, items = training_bos(tok, corpus.rows, corpus.manifest), battery_for(cfg)
    check_unknown(encode_battery(items, tok, bos_id, cfg.model.n_ctx), cfg.probes.max_unknown, "probes.battery")
    model = build_model(cfg.model, corpus.tokenizer.get_vocab_size(), cfg.train.seed)
    streams = _streams(cfg, corpus, dosed, n_params(model))
    rank, world = _process_group(cfg)
    if rank == 0:
        _write_run_files(cfg, run, corpus, dosed, streams.plan, n_params(model), world, store_root)
    store_path, group = run.planned_store(store_root)
    if group_complete(store_path, group):  # read-only: every rank decides the same way
        log(f"{cfg.run_id}: already complete, skipping")
        return run.path
    engine, scheduler = build_engine(cfg, model, world)
    ctx = TrainContext(cfg=cfg, run=run, engine=engine, scheduler=scheduler, device=device(), items=items,
                       tokenizer=tok, pad_id=corpus.fill_id, bos_id=bos_id, rank=rank, world=world,
                       store=RunStore(store_path, group) if rank == 0 else None, log=log)
    resumed = _resume(ctx)  # None for a fresh run; a resumed step (0 included) is already scored and saved
    ctx.start = resumed or 0
    checkpoints = set(cfg.schedule.steps(cfg.train.steps)) - ({ctx.start} if resumed is not None else set())
    hooks = Callbacks([*default_callbacks(rank, progress), *callbacks])
    loss_sum, loss_n = 0.0, 0
    try:
        hooks.on_start(ctx)
        for step in range(ctx.start, cfg.train.steps + 1):
            if step in checkpoints:
                hooks.on_checkpoint(ctx, step, loss_sum / loss_n if loss_n else math.nan)
                loss_sum, loss_n = 0.0, 0
            if hooks.should_stop(ctx, step):
                return run.path
            hooks.on_step(ctx, step)
            if step < cfg.train.steps:
                loss_sum += _train_step(ctx, streams, step)
                loss_n += 1
        hooks.on_end(ctx)
    finally:
        hooks.on_close(ctx)
    return run.path


# ---- preparation ------------------------------------------------------------------------------


def _load_corpora(cfg: RunConfig, corpora_dir: Path, log=None) -> tuple[Corpus, Corpus | None]:
    """Build (or reuse) the run's corpus and, for a dosed run, its intervened stream (progress
    lines through ``log`` unless None)."""
    base_path, dosed_path = build_streams(cfg, corpora_dir, log)
    rows = cfg.corpus.story_tokens if cfg.corpus.is_built else None  # a real-text stream, cut to the run's rows
    return load_corpus(base_path, rows), (load_corpus(dosed_path, rows) if dosed_path else None)


def _streams(cfg: RunConfig, corpus: Corpus, dosed: Corpus | None, n_params: int) -> Streams:
    """The batch of every step. A dosed run reads the intervened stream at the steps of its
    window, the corpus elsewhere; both plans are pure functions of the step, so resume stays
    exact."""
    t = cfg.train
    plan = DataPlan.for_budget(t.budget, corpus.rows, corpus.pad_id, t.steps, t.batch_size, t.seed, n_params)
    if not dosed:
        return Streams(corpus.rows, plan, ignore_index=corpus.pad_id)
    dosed_plan = DataPlan.for_budget(t.budget, dosed.rows, dosed.pad_id, t.steps, t.batch_size, t.seed, n_params)
    return Streams(corpus.rows, plan, dosed.rows, dosed_plan, cfg.intervention.active, ignore_index=corpus.pad_id)


def _process_group(cfg: RunConfig) -> tuple[int, int]:
    """(rank, world size); every rank takes an equal slice of each step's batch."""
    rank, world = ensure_process_group()
    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} must be divisible by the world size {world}")
    return rank, world


def _write_run_files(cfg: RunConfig, run: RunDir, corpus: Corpus, dosed: Corpus | None, plan: DataPlan,
                     n_params: int, world: int, store_root: str | Path | None) -> None:
    """config.json (once), run.json (what was trained on, where the scores go), tokenizer.json."""
    run.path.mkdir(parents=True, exist_ok=True)
    if not run.config.exists():
        write_json_atomic(run.config, cfg.model_dump(mode="json"))
    write_json_atomic(run.meta, {
        "run_id": cfg.run_id, "d_vocab": corpus.tokenizer.get_vocab_size(), "n_params": n_params,
        "corpus_path": str(corpus.path), "corpus_sha256": corpus.manifest["sha256"],
        **({"intervened_corpus_path": str(dosed.path), "intervened_corpus_sha256": dosed.manifest["sha256"],
            "intervention_window": [cfg.intervention.start_step, cfg.intervention.end_step]} if dosed else {}),
        "unique_rows": plan.unique_rows, "tokens_per_step": cfg.train.batch_size * int(corpus.rows.shape[1]),
        "world_size": world, "store": run.store_record(store_root), "precision": precision(cfg),
        "model_d_vocab": model_vocab(cfg.model, corpus.tokenizer.get_vocab_size()),
    })
    shutil.copy(corpus.path / "tokenizer.json", run.tokenizer)


def precision(cfg: RunConfig) -> str:
    """``fp32`` or ``bf16``: what ``train.precision`` means on this machine (``auto``: bf16 on CUDA)."""
    p = cfg.train.precision
    return ("bf16" if torch.cuda.is_available() else "fp32") if p == "auto" else p


def build_engine(cfg: RunConfig, model, world: int):
    """The DeepSpeed engine on this process's device (optimizer and schedule from
    ``runner.train.optim``; bf16 through DeepSpeed's torch autocast, weights in fp32), and its
    scheduler."""
    import deepspeed

    model.to(device())
    opt = build_optimizer(cfg.optim, model)
    sched = Schedule(opt, cfg.optim, cfg.train.steps)
    ds_config: dict = {
        "train_batch_size": cfg.train.batch_size,
        "train_micro_batch_size_per_gpu": cfg.train.batch_size // world,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": cfg.train.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision(cfg) == "bf16":
        ds_config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    # Schedule is an LRScheduler; DeepSpeed's annotation names the old _LRScheduler
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,  # pyright: ignore
                                           config=ds_config)
    if world == 1 and not cfg.train.zero_stage:
        lean_single_process(engine)  # what a group of one does for nothing; same numbers
    return engine, sched


def _resume_tag(ckpt: Path) -> str | None:
    """The tag to resume from: ``latest``'s, or when ``latest`` is empty or names no folder (a kill
    or a full disk while DeepSpeed wrote it, after the tag itself was saved) the newest tag."""
    latest = ckpt / "latest"
    tag = latest.read_text().strip() if latest.exists() else ""
    if tag and (ckpt / tag).is_dir():
        return tag
    tags = sorted(p.name for p in ckpt.glob("step*") if p.is_dir()) if latest.exists() else []
    return tags[-1] if tags else None


def _resume(ctx: TrainContext) -> int | None:
    """Load the newest DeepSpeed checkpoint, if any, and drop the store's rows after it; returns
    the step to start from, None for a fresh run."""
    tag = _resume_tag(ctx.run.checkpoints)
    if tag is None:  # killed before the first resume state: rows already scored are redone
        if ctx.store is not None and ctx.store.n_complete:
            ctx.store.truncate(-1)
        return None
    path, client = ctx.engine.load_checkpoint(str(ctx.run.checkpoints), tag=tag)
    if path is None or not client or "step" not in client:
        raise RuntimeError(f"{ctx.run.checkpoints / tag}: resume state unreadable (damaged); remove "
                           f"{ctx.run.checkpoints} to restart the run from step 0")
    start = int(client["step"])
    if ctx.store is not None:
        ctx.store.truncate(start)
    ctx.log(f"{ctx.cfg.run_id}: resumed from step {start}")
    return start


# ---- one update -------------------------------------------------------------------------------


def _train_step(ctx: TrainContext, streams: Streams, step: int) -> float:
    """One optimizer update on this rank's slice of step ``step``'s batch; returns its loss."""
    micro = ctx.cfg.train.batch_size // ctx.world
    x = torch.from_numpy(streams.batch(step, ctx.rank * micro, (ctx.rank + 1) * micro)).long().to(ctx.device)
    logits = ctx.engine(x).float()  # bf16 under autocast: the loss in fp32 (a no-op in fp32)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                           ignore_index=streams.ignore_index)
    ctx.engine.backward(loss)
    ctx.engine.step()
    return float(loss.detach())
