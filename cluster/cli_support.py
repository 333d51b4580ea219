"""Shared pieces of ``ungrok support`` and ``ungrok audit``: family lists, tables, silent counters.

Presentation only; the counting is in ``runner.data.rvp_support``, ``runner.data.support`` and
``runner.analysis.audit_rvp``.
"""

from __future__ import annotations

from rich.table import Table

from cluster.cli_base import UserError, console

FAMILIES_HELP = ("comma-separated rule families; 'paper' = the paper's rule-versus-prior families "
                 "(pronoun_gender_ref[_v2], pronoun_gender_noun, reflexive_gender[_v2], det_an_choice, a_an_adjective)")


def parse_families(spec: str, field: str) -> tuple[str, ...]:
    """The families named in ``spec`` (``paper`` expanded), each registered; else a UserError."""
    from runner.config import known_families
    from runner.world.rvp import expand_families

    try:
        return known_families(expand_families(f.strip() for f in spec.split(",") if f.strip()))
    except ValueError as e:
        raise UserError(f"{field}: {e}") from None


def is_rvp(family: str) -> bool:
    from runner.world.rules import RULES
    from runner.world.rvp import RuleVsPrior

    return isinstance(RULES.get(family), RuleVsPrior)


def fmt_ratio(v: dict) -> str:
    """``-`` where nothing was counted (never 1 for 0/0); the CI in brackets when there is one."""
    if v.get("ratio") is None:
        return "-"
    ci = v.get("ci")
    return f"{v['ratio']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")


def support_table(title: str, counts: dict) -> Table:
    t = Table(title=title)
    for col in ("family", "class", "mode", "rule", "prior", "cues", "support_ratio"):
        t.add_column(col, justify="right" if col in ("rule", "prior", "cues", "support_ratio") else "left")
    for fam, classes in counts.items():
        for cls, modes in classes.items():
            for mode, v in modes.items():
                t.add_row(fam, cls, mode, f"{v['rule']:,}", f"{v['prior']:,}", f"{v['cues']:,}", fmt_ratio(v))
    return t


def print_cues(cues: dict) -> None:
    """One line per windowed family: how many of its cue words the count can see, and which not."""
    for fam, classes in cues.items():
        parts = []
        for cls, r in classes.items():
            n = len(r["counted"]) + len(r["not_counted"])
            missing = f" (not: {', '.join(r['not_counted'])})" if r["not_counted"] else ""
            parts.append(f"{cls} {len(r['counted'])}/{n}{missing}")
        console.print(f"{fam} cue words the windowed count can see: " + "; ".join(parts),
                      highlight=False)


def silent_message(pairs: list[tuple[str, str]]) -> str:
    """The error line for counters that found nothing: family and mode, and what to do."""
    names = ", ".join(f"{f} ({m})" for f, m in pairs)
    hints = []
    if any(not is_rvp(f) for f, _ in pairs):
        hints.append("the built-in world's families find events only in its template stories; on real text count "
                     "the paper's families (--families paper / --rules paper)")
    if any(is_rvp(f) and m == "windowed" for f, m in pairs):
        hints.append("a windowed count needs its cue words in the text (ungrok support lists the cue words it "
                     "can see; --multi-token-cues also matches cue words of several tokens)")
    return f"no events at all for {names}: their support ratio is undefined (None), not 1" + (
        "; " + "; ".join(hints) if hints else "")


def audit_rvp_rows(t: Table, families: dict, pool: bool) -> None:
    """Rows of the audit table for rule-versus-prior families: one per family, mode and class."""
    for f, modes in families.items():
        for m, v in modes.items():
            rows = dict(v["classes"], **({"pooled": v["pooled"]} if pool else {}))
            for cls, c in rows.items():
                t.add_row(f, cls, m, f"{c['rule']:,}", f"{c['prior']:,}", fmt_ratio(c), "-", "-")
