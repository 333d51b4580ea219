"""Which rows a training step sees: a pure function of (budget, seed, step).

- ``packed``: every step takes fresh rows from one seeded permutation of the corpus; nothing
  repeats, so the corpus must hold ``steps x batch_size`` rows (checked before the job starts).
- ``dn<R>``: the unique data is the first K rows whose tokens reach R x parameter count; it is
  cycled, each epoch in its own seeded order.

Because the batch at step t depends only on t, a resumed run sees exactly the data an
uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner._progress import PREFIX, fmt_seconds
from runner.config import RunConfig
from runner.data.corpora import build_corpus
from runner.doses import DOSES, parse_dose


class BudgetError(ValueError):
    """A budget the corpus cannot meet; the message names the fix (raised before training)."""


@dataclass
class DataPlan:
    n_rows: int  # rows available in the corpus
    unique_rows: int  # rows actually used (cycled when < steps*batch)
    batch_size: int
    seed: int

    @classmethod
    def for_budget(cls, budget: str, rows: np.ndarray, pad_id: int, steps: int, batch_size: int,
                   seed: int, n_params: int) -> "DataPlan":
        need = steps * batch_size
        if budget == "packed":
            if rows.shape[0] < need:
                raise BudgetError(
                    f"budget 'packed' needs {need:,} fresh rows (steps {steps} x batch {batch_size}) but the corpus "
                    f"holds {rows.shape[0]:,} rows of {rows.shape[1]} tokens; use a dn<R> budget (--budget dn5), "
                    f"fewer steps, or a larger corpus (n_stories >= {need:,}; for real text "
                    f"{need * rows.shape[1]:,} tokens: more text or a higher --max-tokens)"
                )
            return cls(rows.shape[0], rows.shape[0], batch_size, seed)
        ratio = float(budget[2:])
        target = ratio * n_params
        cum = np.cumsum((rows != pad_id).sum(axis=1))
        k = int(np.searchsorted(cum, target) + 1)
        if k > rows.shape[0]:
            raise BudgetError(
                f"budget {budget!r} needs {target:,.0f} unique tokens ({ratio:g} x {n_params:,} parameters) but the "
                f"corpus holds {int(cum[-1]):,}; use a smaller ratio or model, or build a larger corpus (n_stories; "
                "for real text more text or a higher --max-tokens)"
            )
        return cls(rows.shape[0], k, batch_size, seed)

    @property
    def cycled(self) -> bool:
        return self.unique_rows < self.n_rows

    def indices(self, step: int) -> np.ndarray:
        """Row indices of the batch at ``step``."""
        g = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epoch, pos = g // self.unique_rows, g % self.unique_rows
        out = np.empty_like(g)
        for e in np.unique(epoch):
            perm = self._perm(int(e))
            out[epoch == e] = perm[pos[epoch == e]]
        return out

    def _perm(self, epoch: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_cache", {})
        if epoch not in cache:
            cache.clear()
            cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.unique_rows)
        return cache[epoch]


@dataclass
class Streams:
    """The rows a run reads at each step: its corpus, or, at the steps of its intervention window,
    the intervened stream (each with its own plan; both pure functions of the step)."""

    rows: np.ndarray
    plan: DataPlan
    dosed_rows: np.ndarray | None = None
    dosed_plan: DataPlan | None = None
    active: Callable[[int], bool] | None = None  # read the intervened stream at this step?
    ignore_index: int = -100  # the padding id a loss skips (the corpus's pad_id; -1 or less: none)

    def __post_init__(self) -> None:
        if self.dosed_rows is not None and (self.dosed_plan is None or self.active is None):
            raise ValueError("an intervened stream needs its plan and its window (dosed_plan, active)")

    def source(self, step: int) -> tuple[np.ndarray, DataPlan]:
        if self.dosed_rows is not None and self.dosed_plan is not None and self.active and self.active(step):
            return self.dosed_rows, self.dosed_plan
        return self.rows, self.plan

    def batch(self, step: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows ``lo:hi`` of the step's batch (a rank's slice under data parallelism)."""
        rows, plan = self.source(step)
        return rows[plan.indices(step)[lo:hi]]


def build_streams(cfg: RunConfig, corpora_dir: str | Path, log: Callable[[str], None] | None = None
                  ) -> tuple[Path, Path | None]:
    """Build (or reuse) the run's corpus and, for a dosed run, its intervened stream beside it.

    The intervened stream depends on (corpus, dose, intervention families and seed) only, so
    every training seed of a cell shares it. ``log``: a progress line as the build starts and
    one as it ends (a corpus can take minutes to build)."""
    if log is None:
        return _build_streams(cfg, corpora_dir)
    t0 = time.monotonic()
    log(f"{PREFIX} streams of {cfg.run_id} (dose {cfg.dose}): building (or reusing) under {corpora_dir}")
    out = _build_streams(cfg, corpora_dir)
    log(f"{PREFIX} streams of {cfg.run_id}: ready in {fmt_seconds(time.monotonic() - t0)}")
    return out


def _build_streams(cfg: RunConfig, corpora_dir: str | Path) -> tuple[Path, Path | None]:
    base = build_corpus(cfg.corpus, corpora_dir)
    if cfg.dose == "none":
        return base, None
    name, level = parse_dose(cfg.dose)
    intervention = DOSES.get(name)
    if intervention is None or level is None:  # only "none" has neither, and it returned above
        raise ValueError(f"dose {cfg.dose!r} names no intervention")
    return base, intervention.build(cfg, level, base)
