"""A live monitor for any training loop: score a small frozen probe set every N steps and warn
before a rule's contrast margin crosses zero.

Method (``trend_warning``). Keep the CM series (mean log p(rule) - log p(competitor) over the
monitor's frozen heldout conflict items). At each observation, fit the Theil-Sen slope of the
last ``window`` CM values against step, with its ``confidence`` interval
(``scipy.stats.theilslopes``: median of pairwise slopes, robust to a few noisy evals). Warn when
the rule is still winning (CM > 0), the upper end of the slope interval is below zero (CM is
falling, not just noisy), and the projected crossing ``step + CM / -slope`` lies within
``horizon`` steps. One warning per family and episode: it re-arms once the trend stops
predicting a crossing.

The same :class:`Monitor` plugs into ungrok's trainer
(``train_run(..., callbacks=[monitor_callback(families)])``), a plain DeepSpeed or PyTorch loop
(call ``monitor.observe(step, model)``; it acts every ``every`` steps), and a Hugging Face
``Trainer`` (:func:`hf_callback`). A warning is a log line, an event in
the run's store (``RunStore.add_event``) when one is attached, and a call to ``on_warning``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, cast

import numpy as np

from runner.scoring import aggregate, continuation_logprobs, encode_battery
from runner.store import RunStore
from runner.train.callbacks import TrainCallback, TrainContext
from runner.world.batteries import ProbeItem, select


@dataclass(frozen=True)
class TrendConfig:
    every: int = 50  # observe every N steps
    window: int = 12  # observations in the slope fit
    horizon: int = 1000  # warn if the projected crossing is within this many steps
    confidence: float = 0.95  # of the Theil-Sen slope interval
    min_step: int = 100  # ignore the first steps (the rule has not formed yet)


def trend_warning(steps, cms, k: TrendConfig = TrendConfig()) -> dict | None:
    """The warning the monitor would give after the last observation, or None."""
    from scipy.stats import theilslopes

    steps, cms = np.asarray(steps, float), np.asarray(cms, float)
    keep = steps >= k.min_step
    steps, cms = steps[keep], cms[keep]
    if len(steps) < k.window:
        return None
    s, c = steps[-k.window :], cms[-k.window :]
    slope, _, lo, hi = cast(tuple[float, float, float, float], tuple(theilslopes(c, s, alpha=k.confidence)))
    now = float(np.median(c[-3:]))  # robust current level
    if now <= 0 or hi >= 0:
        return None
    eta = float(s[-1] + now / -slope)
    if eta - s[-1] > k.horizon:
        return None
    return {"step": int(s[-1]), "cm": now, "slope": float(slope), "slope_ci": [float(lo), float(hi)],
            "projected_crossing": int(round(eta)), "horizon": k.horizon}


def replay(steps, cms, k: TrendConfig = TrendConfig()) -> list[dict]:
    """Run the monitor's decision over a stored series (observations every ``k.every`` steps):
    the warnings a live monitor would have given, one per episode."""
    steps, cms = np.asarray(steps), np.asarray(cms)
    obs = [i for i, s in enumerate(steps) if s % k.every == 0]
    out, armed = [], True
    for j in range(len(obs)):
        idx = obs[: j + 1]
        w = trend_warning(steps[idx], cms[idx], k)
        if w and armed:
            out.append(w)
            armed = False
        elif not w:
            armed = True
    return out


def frozen_probe_set(items: list[ProbeItem], families, n: int = 64) -> list[ProbeItem]:
    """The monitor's probes: the first ``n`` heldout conflict and ``n`` heldout agree items per
    family (a fixed subset, so every observation scores the same items)."""
    out: list[ProbeItem] = []
    for fam in families:
        for cond in ("conflict", "agree"):
            out += select(items, family=fam, condition=cond, split="heldout")[:n]
    if not out:
        raise ValueError(f"no heldout conflict/agree items for families {list(families)}")
    return out


@dataclass
class Monitor:
    """Watches rules during training; see the module docstring for the method."""

    items: list[ProbeItem]
    tokenizer: object
    bos_id: int | None
    n_ctx: int
    pad_id: int = 0
    trend: TrendConfig = TrendConfig()
    on_warning: Callable[[dict], None] | None = None
    store: RunStore | None = None  # warnings become events there
    log: Callable[[str], None] = print
    history: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.families = sorted({it.family for it in self.items})
        self._enc = encode_battery(self.items, self.tokenizer, self.bos_id, self.n_ctx, pad_id=self.pad_id)
        self._armed = {f: True for f in self.families}

    def observe(self, step: int, model) -> list[dict]:
        """Score the frozen probes at ``step`` (if it is an observation step); returns new warnings."""
        if step % self.trend.every:
            return []
        lpc, lpd = continuation_logprobs(model, self._enc)
        m = aggregate(self.items, lpc, lpd)
        new = []
        for fam in self.families:
            h = self.history.setdefault(fam, {"step": [], "cm": [], "conflict": [], "agree": []})
            h["step"].append(step)
            h["cm"].append(m.get(f"{fam}/cm", np.nan))
            h["conflict"].append(m.get(f"{fam}/acc_conflict_heldout", np.nan))
            h["agree"].append(m.get(f"{fam}/acc_agree_heldout", np.nan))
            w = trend_warning(h["step"], h["cm"], self.trend)
            if w and self._armed[fam]:
                w = {"event": "cm_crossing_predicted", "family": fam, **w}
                self._armed[fam] = False
                new.append(w)
                self.log(f"ungrok monitor: WARNING {fam} at step {step}: CM {w['cm']:+.2f} falling "
                         f"{w['slope'] * 1000:+.2f}/1k steps, projected to cross zero at step "
                         f"{w['projected_crossing']}")
                if self.store is not None:
                    self.store.add_event(w)
                if self.on_warning:
                    self.on_warning(w)
            elif not w:
                self._armed[fam] = True
        self.warnings += new
        if self.store is not None:
            self.store.set_attr("monitor", self.history)  # what was observed, beside the events
        return new


class MonitorCallback(TrainCallback):
    """ungrok's trainer callback: builds a :class:`Monitor` on the run's frozen probe set of
    ``families`` (warnings become events in the run's store) and lets it observe every step.
    Rank 0 only (where the store is); a no-op elsewhere."""

    def __init__(self, families, trend: TrendConfig | None = None,
                 on_warning: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.families = tuple(families)
        self.trend = trend or TrendConfig()
        self.on_warning = on_warning
        self.log = log
        self.monitor: Monitor | None = None

    def on_start(self, ctx: TrainContext) -> None:
        if ctx.store is None:
            return
        self.monitor = Monitor(frozen_probe_set(ctx.items, self.families), ctx.tokenizer, ctx.bos_id,
                               ctx.cfg.model.n_ctx, pad_id=ctx.pad_id, trend=self.trend, on_warning=self.on_warning,
                               store=ctx.store, log=self.log or ctx.log)

    def on_step(self, ctx: TrainContext, step: int) -> None:
        if self.monitor is not None:
            self.monitor.observe(step, ctx.model)


def monitor_callback(families, trend: TrendConfig | None = None, on_warning: Callable[[dict], None] | None = None,
                     log: Callable[[str], None] | None = None) -> MonitorCallback:
    """The live monitor as a callback for ``train_run(..., callbacks=[...])``: watches the rule
    ``families`` with ``trend`` (default :class:`TrendConfig`); warnings are logged (``log``,
    default the run's), stored as events in the run's store and passed to ``on_warning``."""
    return MonitorCallback(families, trend, on_warning, log)


def hf_callback(monitor: Monitor):
    """A ``transformers.TrainerCallback`` that calls ``monitor.observe`` after every optimizer step."""
    from transformers import TrainerCallback

    class UngrokMonitorCallback(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                monitor.observe(int(state.global_step), model)
            return control

    return UngrokMonitorCallback()


