"""Generate docs/cli.md from the CLI itself: ``python -m cluster.cli_docs > docs/cli.md``.

A test regenerates it and fails when the committed file is out of date."""

from __future__ import annotations

import sys


def render() -> str:
    """The help of every command, in a fixed width (100 columns) and without colour."""
    import contextlib
    import io
    import os

    os.environ.update({"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    import typer

    from cluster.cli import app

    root = typer.main.get_command(app)
    Context = root.context_class  # the click Context class typer uses
    out = ["# CLI reference", "", "Generated from the CLI (`python -m cluster.cli_docs > docs/cli.md`); "
           "a test fails when this file is out of date.", ""]

    def walk(cmd, path: list[str]) -> None:
        if path:
            ctx = Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):  # typer's rich help prints instead of returning
                returned = cmd.get_help(ctx)
            text = "\n".join(line.rstrip() for line in (returned or buf.getvalue()).splitlines())
            out.extend([f"## `{' '.join(path)}`", "", "```text", text.strip("\n"), "```", ""])
        if hasattr(cmd, "commands"):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], [*path, name] if path else ["ungrok", name])

    walk(root, [])
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
