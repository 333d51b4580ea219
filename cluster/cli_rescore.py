"""``ungrok rescore``: score any battery on finished runs, after training."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cluster.cli_base import PREREG_OPTION, UNSEAL_OPTION, UserError, app, check_quarantine, console


@app.command()
def rescore(
    path: Path = typer.Argument(..., help="a finished run folder, a runs folder or a sweep (one Ray task per run)"),
    battery: Path = typer.Option(..., help="probe battery JSONL, any families (e.g. rvp4.jsonl, ood.jsonl)"),
    name: Optional[str] = typer.Option(
        None, help="the name its scores go under, rescore/<name> (default: the file name without .jsonl)"),
    max_unknown: float = typer.Option(
        0.5, min=0.0, max=1.0, help="refuse a battery where more than this fraction of items hold words outside "
                                    "the run's vocabulary (1: score it anyway)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (several runs); default: local Ray"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
) -> None:
    """Score a battery at every saved checkpoint of finished runs, into the run's store group
    rescore/<name> (resumable: a rerun continues at the next unscored checkpoint). Read it with
    show, verdict and report --battery NAME. A run of a seed quarantined by the prereg is refused
    unless unsealed."""
    from cluster.rescore import finished_runs, rescore_runs
    from runner.analysis.verdicts import run_seeds
    from runner.world.batteries import BatteryError

    try:
        done, unfinished = finished_runs(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_quarantine(prereg, run_seeds([*done, *unfinished]), unseal, "rescore")
    try:
        res = rescore_runs(path, battery, name=name, max_unknown=max_unknown, address=address, num_cpus=num_cpus,
                           log=console.print)
    except (BatteryError, ValueError, FileNotFoundError) as e:  # RescoreError is a ValueError
        raise UserError(str(e)) from None
    for r in res["runs"]:
        t = r["tokens"]
        console.print(f"{Path(r['run']).name}: {r['battery']} -> {r['group']}: scored {r['scored']}, already scored "
                      f"{r['skipped']}; {len(r['families'])} families, {t['n_unknown_items']} of {t['n_items']} "
                      f"items with unknown tokens; start token {'prepended' if r['bos'] else 'none'}",
                      highlight=False, markup=False)
    for d in res["unfinished"]:
        console.print(f"[yellow]left out[/] {d}: not finished", highlight=False)
    if res["runs"]:
        console.print(f"next: ungrok show {res['runs'][0]['run']} --battery {res['runs'][0]['battery']}",
                      highlight=False, markup=False)
    if res["failed"]:
        Console(stderr=True).print(f"{len(res['failed'])} run(s) failed: " + "; ".join(res["failed"]), style="red",
                                   highlight=False, markup=False)
        raise typer.Exit(1)


MAX_UNKNOWN_OPTION = typer.Option(
    None, min=0.0, max=1.0, help="refuse a battery where more than this fraction of items hold words outside the "
                                 "corpus tokenizer's vocabulary (default 0.5; 1: score it anyway)")

BATTERY_OPTION = typer.Option(
    None, "--battery", metavar="NAME",
    help="read the scores of this battery: a name given to ungrok rescore (rescore/<NAME>), or the name of the "
         "battery the runs trained with; default: the training-time scores")


@contextmanager
def scores_of(battery: Optional[str]):
    """The block reads runs through battery ``battery``'s scores (``runner.store.battery_view``);
    a run without them is one red line naming the run and the rescore to run."""
    from runner.store import battery_view

    with battery_view(battery):
        try:
            yield
        except FileNotFoundError as e:
            raise UserError(str(e)) from None
