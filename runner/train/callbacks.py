"""What the training loop does besides training: every feature is a :class:`TrainCallback`.

The loop (``runner.train.loop.train_run``) only steps the model and calls the hooks below at
named points of a run's life; scoring, saving, timing, the progress bar and stopping early live
here, one class each. Per run (``range(start, steps + 1)``, ``start`` the resumed step or 0)::

    on_start(ctx)                         once, after set-up and resume, before the first step
    for step in start .. steps:           ``step`` = updates done so far
        on_checkpoint(ctx, step, loss)    at a scheduled step (not the one resumed from)
        should_stop(ctx, step)            any True: the run ends here, unfinished
        on_step(ctx, step)                the model after ``step`` updates (observe it)
        <one update, unless step == steps>
    on_end(ctx)                           the run finished every step
    on_close(ctx)                         always last (finished, stopped or failed)

Callbacks run in list order; the defaults (:func:`default_callbacks`) come before the caller's.
A callback whose ``phase`` is set has its ``on_checkpoint`` seconds summed in
``ctx.seconds[phase]`` (read by :class:`PhaseTimer`).
"""

from __future__ import annotations

import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from runner._progress import Ticker, plain_progress
from runner.config import RunConfig
from runner.model import save_weights
from runner.scoring import append_scores, battery_info, encode_battery, init_scores, score_attrs
from runner.store import RunDir, RunStore
from runner.trajectory import write_summary
from runner.world.batteries import ProbeItem


@dataclass
class TrainContext:
    """What a callback may use: the run, the engine and the probes. One per ``train_run`` call."""

    cfg: RunConfig
    run: RunDir
    engine: Any  # the DeepSpeed engine; ``engine.module`` is the model
    scheduler: Any  # the learning-rate scheduler
    device: Any
    items: list[ProbeItem]  # the probe battery
    tokenizer: Any
    pad_id: int
    bos_id: int | None
    rank: int = 0
    world: int = 1
    start: int = 0  # the step this process started from (> 0 when resumed)
    store: RunStore | None = None  # the run's store on rank 0, None on other ranks
    log: Callable[[str], None] = print
    metrics: dict = field(default_factory=dict)  # the last scored checkpoint's aggregates
    seconds: dict = field(default_factory=lambda: defaultdict(float))  # on_checkpoint seconds per phase

    @property
    def model(self):
        return self.engine.module

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def writer(self) -> RunStore:
        """The run's store, for callbacks that write it (they run on rank 0 only)."""
        if self.store is None:
            raise RuntimeError(f"rank {self.rank} holds no store: only rank 0 writes scores")
        return self.store


class TrainCallback:
    """A no-op base: override the hooks a feature needs (see the module docstring for the order)."""

    phase: str | None = None  # sum this callback's on_checkpoint seconds in ctx.seconds[phase]

    def on_start(self, ctx: TrainContext) -> None:
        """Once, after the engine is built and any resume state loaded (``ctx.start``), before
        the first step."""

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        """At a scheduled step (after ``step`` updates), before the next update; ``loss`` is the
        mean training loss since the previous checkpoint (NaN at step 0). Not called again for
        the step a resumed run starts from: its checkpoint is already written."""

    def should_stop(self, ctx: TrainContext, step: int) -> bool:
        """Asked at every step, after the checkpoint hooks; True ends the run there, unfinished
        (no ``on_step`` for that step, no ``on_end``; ``on_close`` still runs). Stop right after
        a checkpoint to lose nothing: a rerun resumes from the last one."""
        return False

    def on_step(self, ctx: TrainContext, step: int) -> None:
        """At every step, with the model after ``step`` updates (including the last step)."""

    def on_end(self, ctx: TrainContext) -> None:
        """Once, after the last step, when the run finished (not when it was stopped or failed)."""

    def on_close(self, ctx: TrainContext) -> None:
        """Always, last: after ``on_end``, a stop or an exception. Release resources here."""


class Callbacks:
    """A list of callbacks called as one: each hook calls every callback in order."""

    def __init__(self, callbacks: Iterable[TrainCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, ctx: TrainContext) -> None:
        for cb in self.callbacks:
            cb.on_start(ctx)

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        for cb in self.callbacks:
            t = time.time()
            cb.on_checkpoint(ctx, step, loss)
            if cb.phase:
                ctx.seconds[cb.phase] += time.time() - t

    def should_stop(self, ctx: TrainContext, step: int) -> bool:
        return any([cb.should_stop(ctx, step) for cb in self.callbacks])  # every callback is asked

    def on_step(self, ctx: TrainContext, step: int) -> None:
        for cb in self.callbacks:
            cb.on_step(ctx, step)

    def on_end(self, ctx: TrainContext) -> None:
        for cb in self.callbacks:
            cb.on_end(ctx)

    def on_close(self, ctx: TrainContext) -> None:
        for cb in self.callbacks:
            cb.on_close(ctx)


# ---- the default features, in the order they run ----------------------------------------------


class ScoreProbes(TrainCallback):
    """Scores the probe battery at every checkpoint and appends the row (loss, lr, per-item
    log-probs, aggregates) to the run's store; sets ``ctx.metrics``. Rank 0 only."""

    phase = "score"

    def on_start(self, ctx: TrainContext) -> None:
        cfg = ctx.cfg
        self.enc = encode_battery(ctx.items, ctx.tokenizer, ctx.bos_id, cfg.model.n_ctx, pad_id=ctx.pad_id)
        attrs = {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json"),
                 **score_attrs(self.enc, battery_info(cfg.probes.battery))}
        init_scores(ctx.writer(), self.enc, attrs)

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        ctx.metrics = append_scores(ctx.writer(), ctx.model, self.enc, step, loss, ctx.lr)


class SaveWeights(TrainCallback):
    """Saves the model weights at every checkpoint (``RunDir.weights(step)``, safetensors, all
    kept). Rank 0 only."""

    phase = "checkpoint"

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        save_weights(ctx.model, ctx.run.weights(step))


class SaveResume(TrainCallback):
    """Saves a full DeepSpeed checkpoint (model, optimizer, scheduler; tag ``step<N>``) at every
    checkpoint and keeps the last ``keep`` (default ``cfg.schedule.keep_resume``). Every rank
    (the save is collective); rank 0 removes the old tags."""

    phase = "checkpoint"

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        ckpt = ctx.run.checkpoints
        ctx.engine.save_checkpoint(str(ckpt), tag=f"step{step:07d}", client_state={"step": step})
        if ctx.rank == 0:
            keep = self.keep or ctx.cfg.schedule.keep_resume
            for old in sorted(p for p in ckpt.glob("step*") if p.is_dir())[:-keep]:
                shutil.rmtree(old, ignore_errors=True)


class PhaseTimer(TrainCallback):
    """Marks the store complete at the end with this process's wall seconds per phase (a
    resumed run counts only its own part): ``train_seconds`` (whole loop), ``score_seconds``
    (probe log-probs + store append), ``checkpoint_seconds`` (weights + resume state) and
    ``step_seconds`` (the rest: the updates). Rank 0 only."""

    def on_start(self, ctx: TrainContext) -> None:
        self.t0 = time.time()

    def on_end(self, ctx: TrainContext) -> None:
        total = time.time() - self.t0
        phases = {"score_seconds": ctx.seconds["score"], "checkpoint_seconds": ctx.seconds["checkpoint"]}
        ctx.writer().mark_complete(train_seconds=round(total, 2), step_seconds=round(total - sum(phases.values()), 2),
                                **{k: round(v, 2) for k, v in phases.items()})


class WriteSummary(TrainCallback):
    """Writes ``summary.json`` (the trajectory figures) when the run has finished. Rank 0 only."""

    def on_end(self, ctx: TrainContext) -> None:
        write_summary(ctx.run.path)


class ProgressBar(TrainCallback):
    """A rich progress bar with the first probed family's heldout conflict accuracy and CM."""

    def __init__(self) -> None:
        self.p: Any = None

    def on_start(self, ctx: TrainContext) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.fam = ctx.cfg.probes.families[0]
        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.p.start()
        self.task = self.p.add_task(ctx.cfg.run_id, total=ctx.cfg.train.steps, completed=ctx.start, info="")

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        acc = ctx.metrics.get(f"{self.fam}/acc_conflict_heldout", math.nan)
        cm = ctx.metrics.get(f"{self.fam}/cm", math.nan)
        self.p.update(self.task, info=f"loss {loss:.3f}  {self.fam} conflict {acc:.2f}  CM {cm:+.2f}")

    def on_step(self, ctx: TrainContext, step: int) -> None:
        self.p.update(self.task, completed=step)

    def on_close(self, ctx: TrainContext) -> None:
        if self.p is not None:
            self.p.stop()


class ProgressLines(TrainCallback):
    """The bar's plain-text twin for a log (stdout not a terminal): a line every N steps or 30 s
    with step/total, steps/s, ETA and, once scored, the loss and the bar's figures (see
    :mod:`runner._progress`); written with ``ctx.log``."""

    def __init__(self, every: int | None = None, seconds: float | None = None) -> None:
        self.every, self.seconds, self.info = every, seconds, ""
        self.t: Ticker | None = None

    def on_start(self, ctx: TrainContext) -> None:
        self.fam = ctx.cfg.probes.families[0]
        self.t = Ticker(f"train {ctx.cfg.run_id}", ctx.cfg.train.steps, start=ctx.start, every=self.every,
                        seconds=self.seconds, log=ctx.log)
        self.t.update(ctx.start, "resumed" if ctx.start else "started", force=True)

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        acc = ctx.metrics.get(f"{self.fam}/acc_conflict_heldout", math.nan)
        cm = ctx.metrics.get(f"{self.fam}/cm", math.nan)
        self.info = f"loss {loss:.3f}  {self.fam} conflict {acc:.2f}  CM {cm:+.2f}"

    def on_step(self, ctx: TrainContext, step: int) -> None:
        if self.t is not None and step < ctx.cfg.train.steps:
            self.t.update(step, self.info)

    def on_end(self, ctx: TrainContext) -> None:
        if self.t is not None:
            self.t.done_line(ctx.cfg.train.steps, self.info)


def default_callbacks(rank: int, progress: bool = True) -> list[TrainCallback]:
    """What every run does: on rank 0 score, save weights, save resume state, time the phases
    and mark the store complete, write the summary (and, if ``progress``, show a bar on a
    terminal or write plain progress lines otherwise); on other ranks only the (collective)
    resume save."""
    if rank != 0:
        return [SaveResume()]
    shown = ([ProgressLines() if plain_progress() else ProgressBar()]) if progress else []
    return [ScoreProbes(), SaveWeights(), SaveResume(), PhaseTimer(), WriteSummary(), *shown]


# ---- optional features ------------------------------------------------------------------------


class StopAt(TrainCallback):
    """Ends the run right after the first checkpoint at or after ``step`` (as a kill there
    would, but cleanly): the run stays incomplete and a rerun resumes from that checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step
        self._due = False

    def on_checkpoint(self, ctx: TrainContext, step: int, loss: float) -> None:
        self._due = step >= self.step

    def should_stop(self, ctx: TrainContext, step: int) -> bool:
        return self._due
