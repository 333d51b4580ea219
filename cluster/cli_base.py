"""Shared pieces of the ``ungrok`` command line: the typer apps, the console, user errors, ``main``.

The commands themselves live in ``cluster.cli`` (corpora, training, sweeps, the demo),
``cluster.cli_analysis`` (prereg, verdict, report, audit, monitor) and ``cluster.cli_mech``
(mech stages, public checkpoints); each registers on the apps defined here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ungrok: natural-ungrokking research runs.")
corpus_app = typer.Typer(no_args_is_help=True, help="Build and inspect corpora.")
app.add_typer(corpus_app, name="corpus")
prereg_app = typer.Typer(no_args_is_help=True, help="Lock, verify and amend a pre-registration.")
app.add_typer(prereg_app, name="prereg")
mech_app = typer.Typer(no_args_is_help=True, help="Capture activations and localize the competing pattern.")
app.add_typer(mech_app, name="mech")
console = Console(width=None if sys.stdout.isatty() else 140)


def plain_log(msg: str) -> None:
    """Print a progress line as text: labels like ``synthetic[support=0.3]`` are not rich markup."""
    console.print(msg, markup=False, highlight=False)


class UserError(Exception):
    pass


def _validation_message(e: ValidationError, prefix: str = "") -> str:
    from runner.config import field_error

    return prefix + field_error(e)


def _locked(prereg: Optional[Path]):
    from runner.analysis.prereg import PreregError, load_locked

    if prereg is None:
        return None
    try:
        return load_locked(prereg)
    except PreregError as e:
        raise UserError(str(e)) from None


PREREG_ENV = "UNGROK_PREREG"


# ``--prereg`` of a command that touches runs: falls back to ``$UNGROK_PREREG``, so a project names
# its prereg once. ``--unseal REASON`` breaks the seal on quarantined seeds (logged). Module-level
# singletons: typer reads them, never changes them, so every command may share them.
PREREG_OPTION = typer.Option(None, envvar=PREREG_ENV,
                             help="the locked prereg TOML whose quarantine applies (default: $UNGROK_PREREG; "
                                  "none: no seed is sealed)")
UNSEAL_OPTION = typer.Option(None, "--unseal", metavar="REASON",
                             help="touch quarantined seeds anyway; the reason, who and when are appended to "
                                  "<prereg>.unseal.jsonl (hash-chained) and shown in the report")


def check_quarantine(prereg: Optional[Path], seeds: dict, unseal: Optional[str], command: str, locked=None):
    """The CLI side of :func:`runner.analysis.quarantine.refuse_quarantined`: refuse (one red line,
    exit 2) before anything starts, or log the unseal and say so. Returns the loaded prereg (or
    None); pass ``locked`` when it is already loaded."""
    from runner.analysis.prereg import PreregError
    from runner.analysis.quarantine import refuse_quarantined

    locked = locked if locked is not None else _locked(prereg)
    if unseal is not None and locked is None:
        raise UserError("--unseal needs the prereg whose quarantine it breaks: --prereg FILE (or $UNGROK_PREREG)")
    try:
        rec = refuse_quarantined(locked, seeds, unseal, command)
    except PreregError as e:
        raise UserError(str(e)) from None
    if rec is not None and locked is not None:
        console.print(f"[yellow]unsealed[/] quarantined seed(s) {rec['seeds']} for {command} "
                      f"(record {rec['n']} of {locked.path}.unseal.jsonl)", highlight=False)
    return locked


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ungrok`` console script; returns the exit code (``cluster.cli_errors``:
    0 done, 1 failed, 2 usage or bad input, 3 folder in use, 130 interrupted). Every error is one
    line on stderr; ``--debug`` (anywhere) or ``UNGROK_DEBUG=1`` shows the traceback instead."""
    import os

    from rich.markup import escape

    from cluster import cli_errors as codes

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("UNGROK_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    err = Console(stderr=True, soft_wrap=True)
    try:
        rv = app(args=args, standalone_mode=False)
    except UserError as e:
        err.print(f"[red]error:[/] {escape(codes.one_line(e))}", highlight=False)
        return codes.USAGE
    except typer.Exit as e:
        rv = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        rv = codes.INTERRUPTED
    except typer.TyperException as e:  # usage errors: typer ships its own click, whose exceptions these are
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"[red]error:[/] {escape(codes.one_line(e))}", highlight=False)
        return int(getattr(e, "exit_code", codes.USAGE)) or codes.USAGE
    except Exception as e:
        if debug:
            raise
        code, line = codes.describe(e)
        err.print(f"[red]error:[/] {escape(line)}", highlight=False)
        return code
    if rv == codes.INTERRUPTED:  # typer turns Ctrl-C into exit code 130, silently
        err.print("[red]interrupted[/] (rerun the same command to resume)", highlight=False)
    return rv if isinstance(rv, int) else codes.OK
