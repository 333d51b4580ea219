"""Printing shared by the bench scripts: every ``measure()`` returns rows ``{figure, value, conditions}``."""

from __future__ import annotations


def print_rows(rows: list[dict]) -> None:
    """One line per figure: name, value, then the conditions it was measured under."""
    w = max(len(r["figure"]) for r in rows) + 2
    for r in rows:
        print(f"{r['figure']:<{w}}{r['value']:>10}   {r['conditions']}")
