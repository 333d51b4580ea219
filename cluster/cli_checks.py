"""Small helpers of the command line: warnings printed before a job starts (what would otherwise
surprise later), and the files ``show`` refreshes, skipped on a read-only archive."""

from __future__ import annotations

import errno

from rich.console import Console


def short_run(cfg) -> str | None:
    """A warning when ``cfg``'s checkpoints leave the paper's classifier too few evaluations
    (``final_min`` at or after ``start_step``): every family of the run would be INCOMPLETE."""
    from runner.trajectory import Classifier

    k = Classifier()
    n = sum(1 for s in cfg.schedule.steps(cfg.train.steps) if s >= k.start_step)
    if n >= k.final_min:
        return None
    return (f"train.steps {cfg.train.steps}: {n} checkpoint(s) at or after step {k.start_step}, the classifier "
            f"needs {k.final_min}: every family will be labelled INCOMPLETE (train longer, or checkpoint more "
            "often: schedule.every)")


def warn_short(cfgs) -> None:
    """Print :func:`short_run`'s warning (once) for the first config it concerns."""
    for cfg in cfgs:
        msg = short_run(cfg)
        if msg:
            Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/] {msg}", highlight=False, markup=True)
            return


READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def show_files(run, summary: dict) -> str:
    """Refresh a run's ``summary.json`` (only when its figures changed) and draw its plot; on a
    read-only run folder (an archive) nothing is written and the line says so. Returns the line
    ``show`` prints."""
    import json

    from runner._io import write_json_atomic
    from runner.report.plots import plot_run
    from runner.store import RunDir

    dest = RunDir(run).summary
    try:
        if not dest.exists() or json.loads(dest.read_text()) != json.loads(json.dumps(summary)):
            write_json_atomic(dest, summary)
        return f"plot: {plot_run(run, figures=summary['families'])}"
    except OSError as e:
        if e.errno not in READ_ONLY:
            raise
        return f"plot: not written ({e.filename or run} is read-only; the figures above are computed, not stored)"
