"""``ungrok classify``: the registered classifier's figures for trajectories from anywhere."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from cluster.cli_base import UserError, _locked, app, console

SHOWN = 40  # table rows printed before the rest is summarised


@app.command()
def classify(
    file: Path = typer.Argument(..., help="JSON lines, one trajectory per line: steps, conflict, agree, optional cm"),
    out: Optional[Path] = typer.Option(None, help="where to write the figures (default: FILE.figures.jsonl)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON lines only"),
    prereg: Optional[Path] = typer.Option(None, help="a locked prereg: classify under its locked constants"),
    operators: Optional[str] = typer.Option(
        None, help="paper (default: the paper's frozen code) or ungrok-0.1 (ungrok's earlier operators)"),
) -> None:
    """Label, control and margin validity, finals, onset, CM crossing, peak per trajectory (the same
    classifier as show and verdict); one JSON line of figures per input line."""
    from runner.analysis.classify import ClassifyError, classify_file, default_out
    from runner.trajectory import Classifier

    locked = _locked(prereg)
    k = locked.classifier_at(None) if locked is not None else Classifier()
    try:
        k = replace(k, operators=operators) if operators is not None else k
        out = out or default_out(file)
        rows = classify_file(file, out, k)
    except (ClassifyError, ValueError) as e:
        raise UserError(str(e)) from None
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    _print_rows(rows)
    counts = ", ".join(f"{lab} {n}" for lab, n in sorted(Counter(r["label"] for r in rows).items()))
    src = f"locked prereg {prereg}" if locked is not None else "the paper's constants"
    console.print(f"{len(rows)} trajectories ({counts}); operators {k.operators}, {src} -> {out}")


def _print_rows(rows: list[dict]) -> None:
    from rich.table import Table

    from runner.report.tables import _fmt

    keys = ["line", "label", "conflict_final", "control_valid", "peak", "peak_step", "onset", "cm_final",
            "cm_valid", "cm_cross"]
    t = Table(title="figures (the registered classifier)")
    for key in keys:
        t.add_column(key, justify="right")
    for r in rows[:SHOWN]:
        t.add_row(*[_fmt(r.get(key)) for key in keys])
    console.print(t)
    if len(rows) > SHOWN:
        console.print(f"... {len(rows) - SHOWN} more in the output file")
