"""Progress that reaches a log: a live bar on a terminal, plain lines everywhere else.

Piped to a file (a cluster job, CI, ``| tee``) a rich bar draws nothing until it stops, so a long
loop looks dead. :func:`plain_progress` says which to use; a :class:`Ticker` writes the plain
lines: one at most every ``every`` steps or every ``seconds`` seconds, whichever comes first,
each with the step, the total, steps/s and the ETA, e.g.::

    progress: train run-abc: 400/2000 (20%)  12.5 steps/s  ETA 2m08s  loss 3.21

Settings (environment, read when a ticker is made): ``UNGROK_PROGRESS`` = ``plain`` (lines
even on a terminal), ``bar`` (a bar even when piped) or ``auto`` (the default: bar on a
terminal); ``UNGROK_PROGRESS_EVERY`` = a line every N steps (default: a tenth of the total);
``UNGROK_PROGRESS_SECONDS`` = a line at least this often while it moves (default 30).
Progress only prints: it never changes what a loop computes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")

PREFIX = "progress:"  # no brackets: rich would read "[progress]" as markup and drop it


def plain_progress(stream=None) -> bool:
    """True when progress should be plain lines: ``stream`` (stdout) is not a terminal, or
    ``UNGROK_PROGRESS=plain``; False on a terminal or with ``UNGROK_PROGRESS=bar``."""
    mode = os.environ.get("UNGROK_PROGRESS", "auto").strip().lower()
    if mode in ("plain", "bar"):
        return mode == "plain"
    stream = sys.stdout if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def fmt_seconds(s: float) -> str:
    """``75.2`` -> ``1m15s``; ``4000`` -> ``1h06m``; NaN or inf -> ``?``."""
    if not math.isfinite(s) or s < 0:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Ticker:
    """Plain progress lines for one loop of ``total`` steps (see the module doc).

    ``update(done, info)`` writes a line when due and returns whether it did; ``done_line`` writes
    the last one. ``start`` is where a resumed loop begins: steps/s counts only this process's."""

    def __init__(self, name: str, total: int | None, *, start: int = 0, unit: str = "steps",
                 every: int | None = None, seconds: float | None = None,
                 log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.total, self.unit, self.log, self.clock = name, total, unit, log, clock
        default_every = max(1, (total or 0) // 10) if total else 1
        self.every = int(every or _env_float("UNGROK_PROGRESS_EVERY", default_every)) or 1
        self.seconds = seconds if seconds is not None else _env_float("UNGROK_PROGRESS_SECONDS", 30.0)
        self.t0 = self.t_last = clock()
        self.start = self.last = start

    def rebase(self, done: int) -> None:
        """Count steps/s and the ETA from now and ``done`` on (a queued job that has just started:
        its waiting time is not its speed)."""
        self.t0, self.start = self.clock(), done

    def rate(self, done: int) -> float:
        dt = self.clock() - self.t0
        return (done - self.start) / dt if dt > 0 and done > self.start else math.nan

    def line(self, done: int, info: str = "") -> str:
        rate = self.rate(done)
        if self.total:
            pos = f"{done}/{self.total} ({100 * done / self.total:.0f}%)"
            eta = (f"  ETA {fmt_seconds((self.total - done) / rate)}"
                   if done < self.total and math.isfinite(rate) else "")
        else:
            pos, eta = f"{done}", ""
        speed = f"  {rate:.3g} {self.unit}/s" if math.isfinite(rate) else ""
        return f"{PREFIX} {self.name}: {pos}{speed}{eta}{'  ' + info if info else ''}"

    def due(self, done: int) -> bool:
        return done - self.last >= self.every or (done > self.last and self.clock() - self.t_last >= self.seconds)

    def update(self, done: int, info: str = "", force: bool = False) -> bool:
        if not (force or self.due(done)):
            return False
        self.log(self.line(done, info))
        self.last, self.t_last = done, self.clock()
        return True

    def done_line(self, done: int | None = None, info: str = "") -> None:
        """The closing line (``done`` defaults to the total), with the wall time it took."""
        done = self.total if done is None and self.total else (done or self.last)
        took = f"done in {fmt_seconds(self.clock() - self.t0)}"
        self.update(done, f"{took}  {info}".strip(), force=True)


def track(items: Sequence[T], name: str, *, unit: str = "items", log: Callable[[str], None] | None = print,
          every: int | None = None, info: Callable[[T], str] | None = None) -> Iterator[T]:
    """Yield ``items``, writing a :class:`Ticker` line through ``log`` after each one that is due
    and the closing line after the last (nothing when ``log`` is None); ``info(item)`` is appended
    to a line (e.g. the checkpoint's step)."""
    t = Ticker(name, len(items), unit=unit, every=every, log=log) if log is not None else None
    for i, item in enumerate(items, 1):
        yield item
        if t is not None:
            extra = info(item) if info else ""
            if i == len(items):
                t.done_line(i, extra)
            else:
                t.update(i, extra)
