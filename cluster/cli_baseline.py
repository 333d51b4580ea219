"""``ungrok baseline RUN``: the paper's n-gram control on the exact stream a run saw."""

from __future__ import annotations

from pathlib import Path

import typer

from cluster.cli_base import UserError, app, console


@app.command()
def baseline(
    run: Path = typer.Argument(..., help="a run folder (of `ungrok train`, or a sweep's runs/<id>)"),
) -> None:
    """Stupid-Backoff n-gram models (alpha 0.4, orders 2 and 5) built from the exact rows the run read,
    scored with its battery: accuracy per family and condition, CM, and whether the agree control
    passes. Written to RUN/baseline.json."""
    from rich.table import Table

    from runner.analysis.ngram import baseline_run

    try:
        res = baseline_run(run)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    t = Table(title=f"n-gram baseline of {res['run']} ({res['tokens_seen']:,} tokens seen)")
    for col in ("order", "family", "conflict acc", "agree acc", "CM", "agree control"):
        t.add_column(col)
    for order in res["orders"]:
        figs = res[f"order{order}"]
        for fam, ok in figs["control_valid"].items():
            t.add_row(str(order), fam, f"{figs.get(f'{fam}/acc_conflict_heldout', float('nan')):.2f}",
                      f"{figs.get(f'{fam}/acc_agree_heldout', float('nan')):.2f}",
                      f"{figs.get(f'{fam}/cm', float('nan')):+.2f}", "valid" if ok else "INVALID")
    console.print(t)
    console.print(f"written to {Path(run) / 'baseline.json'}", highlight=False)
