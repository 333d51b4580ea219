"""``ungrok`` commands for analysis: prereg lock/verify/amend, verdict, report, audit, monitor-replay."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from cluster.cli_base import PREREG_ENV, UNSEAL_OPTION, UserError, _locked, app, console, prereg_app
from cluster.cli_rescore import BATTERY_OPTION, scores_of
from cluster.cli_support import FAMILIES_HELP


@prereg_app.command("lock")
def prereg_lock(file: Path = typer.Argument(..., help="the prereg TOML")) -> None:
    """Lock the prereg: record its sha256, UTC time, ungrok version and git commit."""
    from runner.analysis.prereg import PreregError, lock, lock_path

    try:
        rec = lock(file)
    except PreregError as e:
        raise UserError(str(e)) from None
    console.print(f"locked {file}: sha256 {rec['sha256'][:16]}… at {rec['locked_utc']} -> {lock_path(file)}")


@prereg_app.command("verify")
def prereg_verify(file: Path = typer.Argument(..., help="the prereg TOML")) -> None:
    """Check the prereg against its lock and the amendment chain."""
    from runner.analysis.prereg import PreregError, load_locked

    try:
        locked = load_locked(file)
    except PreregError as e:
        raise UserError(str(e)) from None
    rec = locked.record
    console.print(f"ok: {file} matches its lock ({rec['sha256'][:16]}…, {len(rec['amendments'])} amendments, "
                  f"{len(locked.unseals)} unseal records)")


@prereg_app.command("amend")
def prereg_amend(
    file: Path = typer.Argument(..., help="the locked prereg TOML"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="classifier.<constant>=<number>; repeatable"),
    add: Optional[Path] = typer.Option(
        None, help="a TOML file of new predictions, falsifiers or dose_predictions tables (the prereg's shape) "
                   "to register; they are scored only on data first scored after this amendment"),
    reason: str = typer.Option(..., help="why (recorded in the chain and the report)"),
) -> None:
    """Append a dated, hash-chained amendment: changed constants apply to data produced after it;
    added predictions are scored only on data first scored after it."""
    from runner.analysis.prereg import Additions, PreregError, amend
    from runner.config import load_toml_model

    changes = {}
    for item in set_ or []:
        key, eq, val = item.partition("=")
        try:
            changes[key.strip()] = float(val) if "." in val or "e" in val else int(val)
        except ValueError:
            raise UserError(f"--set {item!r}: expected KEY=NUMBER, e.g. classifier.displaced=0.55") from None
        if not eq:
            raise UserError(f"--set {item!r}: expected KEY=NUMBER")
    try:
        added = load_toml_model(add, Additions, PreregError, "additions file").model_dump(mode="json") if add else None
        rec = amend(file, changes, reason, added)
    except PreregError as e:
        raise UserError(str(e)) from None
    a = rec["amendments"][-1]
    new = [p["id"] for kind in a.get("add", {}).values() for p in kind]
    console.print(f"amendment {a['n']} at {a['utc']}: {a['changes'] or ''}{' adds ' + ', '.join(new) if new else ''} "
                  f"(hash {a['hash'][:12]}…)", highlight=False)


def print_verdict(v: dict, title: str) -> None:
    """Print a verdict: per-run labels, the prediction scoreboard and the dose-response table."""
    from rich.table import Table

    from runner.analysis.dose_response import treatment

    t = Table(title=title)
    for col in ("run", "status", "family", "label", "final", "by class", "final 95% CI", "control", "onset",
                "CM cross"):
        t.add_column(col)
    for r in v["runs"]:
        if r["sealed"]:
            t.add_row(r["run"], "sealed", "", "", "", "", "", "", "", "")
        for fam, f in r["families"].items():
            by = " ".join(f"{c[:4]} {x['final']:.2f}" for c, x in (f.get("by_class") or {}).items()
                          if x.get("final") is not None)
            t.add_row(r["run"], r["status"], fam, f.get("label"), f"{f.get('final', float('nan')):.2f}", by,
                      str([round(x, 2) for x in f.get("final_ci", [])]),
                      "valid" if f.get("control_valid") else "INVALID",
                      str(f.get("onset")), str(f.get("cm_cross")))
    console.print(t)
    console.print(scoreboard_table(v))
    for c in v.get("intervention_gate", []):
        if not c["valid"]:
            cell = "/".join(str(x) for x in c["cell"].values() if x)
            console.print(f"[red]INTERVENTION-INVALID[/] {cell}: control families failing {c['failing']}",
                          highlight=False)
    if v.get("unsealed"):
        u = v["unsealed"]
        console.print(f"[yellow]quarantined seeds {u['seeds']} unsealed[/] by {u['user']} at {u['utc']}: "
                      f"{u['reason']}", highlight=False)
    if v["dose_response"]["groups"]:
        dt = Table(title="dose-response (dose 0 = undosed runs of the same corpus and budget)")
        for col in ("intervention", "family", "corpus", "dose", "seeds", "support seen (contested)",
                    "mean final", "mean CM final", "labels"):
            dt.add_column(col)
        for g in v["dose_response"]["groups"]:
            for lv in g["levels"]:
                sup = lv["support_contested"]
                dt.add_row(treatment(g), g["family"], f"{g['corpus']}/{g['budget']}", lv["dose_name"],
                           str(lv["n_seeds"]), f"{sup:.3g}" if sup is not None else "-", f"{lv['mean_final']:.3f}",
                           f"{lv['mean_cm_final']:+.2f}", ", ".join(lv["labels"]))
            rho = g["rho_cm_final"]
            dt.add_row("", "", "", "rho(dose, CM final)", "", "", "", f"{rho:+.2f}" if rho is not None else "-", "")
        console.print(dt)


def scoreboard_table(v: dict):
    """The scoreboard: every prediction with where it was registered (the lock or an amendment)
    and its result; a VOID names its gate and seeds, a margin prediction the seeds it left out."""
    from rich.table import Table

    sb = Table(title="scoreboard")
    for col in ("id", "registered", "rule", "result", "status", "values / why"):
        sb.add_column(col)
    for p in v["predictions"] + v["falsifiers"] + v["dose_predictions"]:
        reg = p.get("registered", {})
        when = "lock" if reg.get("by", "lock") == "lock" else f"{reg['by']} ({reg['utc'][:10]})"
        vals = str([round(x, 3) if isinstance(x, float) else x for x in p.get("values", [])])
        if p.get("instrument_invalid"):
            vals += f"; margin instrument invalid, left out: seeds {p['instrument_invalid']['seeds']}"
        sb.add_row(p["id"], when, f"{p['family']} {p['select']}: {p['rule']}", p["result"], p["status"],
                   p.get("why") or vals)
    return sb


@app.command()
def verdict(
    paths: list[Path] = typer.Argument(..., help="run folders, runs folders or sweeps (several are analysed together)"),
    prereg: Path = typer.Option(..., envvar=PREREG_ENV, help="the locked prereg TOML (default: $UNGROK_PREREG)"),
    unseal: Optional[str] = UNSEAL_OPTION,
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="default <first path>/verdict.json (verdict-<battery>.json with --battery)"),
    battery: Optional[str] = BATTERY_OPTION,
) -> None:
    """Score every run and every registered prediction; print a scoreboard and write JSON.
    --battery NAME: on the scores of a rescored battery."""

    from cluster.cli_checks import READ_ONLY
    from runner._io import write_json_atomic
    from runner.analysis.verdicts import verdict as compute

    locked = _locked(prereg)
    if locked is None:
        raise UserError("--prereg: give the locked prereg TOML (or set $UNGROK_PREREG)")
    path = paths[0]
    try:
        with scores_of(battery):
            v = compute(paths if len(paths) > 1 else path, locked, unseal, command="verdict")
    except ValueError as e:
        raise UserError(str(e)) from None
    print_verdict(v, f"runs under {prereg}" + (f", battery {battery}" if battery else ""))
    dest = json_out or (path / (f"verdict-{battery}.json" if battery else "verdict.json"))
    try:
        write_json_atomic(dest, json.loads(json.dumps(v, default=str)))
    except OSError as e:  # the runs are a read-only archive: the scoreboard above stands
        if json_out is not None or e.errno not in READ_ONLY:
            raise
        console.print(f"{dest} not written ({path} is read-only); pass --json PATH to keep the verdict")
        return
    console.print(f"wrote {dest}")


@app.command()
def report(
    paths: list[Path] = typer.Argument(..., help="run folders, runs folders or sweeps (several are reported together)"),
    prereg: Optional[Path] = typer.Option(
        None, envvar=PREREG_ENV, help="the locked prereg TOML (default: $UNGROK_PREREG; none: all exploratory)"),
    unseal: Optional[str] = UNSEAL_OPTION,
    out: Optional[Path] = typer.Option(
        None, help="report folder (default <first path>/report, report-<battery> with --battery)"),
    battery: Optional[str] = BATTERY_OPTION,
) -> None:
    """Write the HTML report page (images embedded) and its PNGs; a localized run (ungrok mech
    localize) shows its components under its trajectories, runs with mechanism measures (ungrok
    mech appendix) are also shown side by side. --battery NAME: on the scores of a rescored battery."""
    from mech.appendix_report import compare_section
    from mech.appendix_report import report_section as appendix_section
    from mech.plots import report_section
    from runner.report.html import write_report

    locked = _locked(prereg)
    if unseal is not None and locked is None:
        raise UserError("--unseal needs the prereg whose quarantine it breaks: --prereg FILE (or $UNGROK_PREREG)")
    if battery and out is None:
        out = paths[0] / f"report-{battery}"
    try:
        with scores_of(battery):
            page = write_report(paths, locked, unseal, out, extra_sections=[report_section, appendix_section],
                                sweep_sections=[compare_section])
    except ValueError as e:
        raise UserError(str(e)) from None
    console.print(f"report: {page}")


def _audit_row(f: str, m: str, c: dict, cal) -> list[str]:
    """One row of the audit table: rule, class, mode, counts, ratio [CI], f* [interval], call."""
    from cluster.cli_support import fmt_ratio

    fstar, call = "-", c.get("call", "-")
    if cal is not None:
        fit = cal.fit
        if fit.get("f_star"):
            fstar = (f"{fit['f_star']:.3g} [{fit['ci'][0]:.3g}, {fit['ci'][1]:.3g}] ({fit['method']}, "
                     f"{fit['n_points']} runs)")
        else:
            fstar = fit.get("why", "-")
    return [f, "pooled", m, f"{c['rule']:,}", f"{c['prior']:,}", fmt_ratio(c), fstar, call]


def _audit_ticker(name: str, ticker):
    """A ``progress(n_docs, n_total)`` that writes plain lines, a new ticker for each pass over the
    corpus (built-in families, then rule-versus-prior ones) and a closing line at the total."""
    state: dict = {}

    def progress(n: int, total: int | None) -> None:
        t = state.get("t")
        if t is None or n < t.last:
            t = state["t"] = ticker(name, total, unit="docs")
        t.update(n, force=n == total)
    return progress


def _audit_counts(corpus: Path, builtin: list[str], rvp: list[str], **kw):
    """(built-in families' AuditResult or None, rule-versus-prior families' or None), with a progress bar."""
    from rich.progress import Progress

    from runner._progress import Ticker, plain_progress
    from runner.analysis.audit import AuditError, audit_corpus
    from runner.analysis.audit_rvp import audit_rvp

    pool, multi, workers = kw.pop("pool"), kw.pop("multi_token_cues"), kw.pop("workers")
    plain = plain_progress()  # piped: plain lines (a rich bar shows nothing until it stops)
    with (nullcontext() if plain else Progress(console=console, transient=True)) as p:
        if p is None:
            kw["progress"] = _audit_ticker(f"audit {corpus}", Ticker)
        else:
            task = p.add_task(f"auditing {corpus}", total=None)
            kw["progress"] = lambda n, tot: p.update(task, completed=n, total=tot)
        try:
            res = audit_corpus(corpus, builtin, workers=workers, **kw) if builtin else None
            res_rvp = audit_rvp(corpus, rvp, pool=pool, multi_token_cues=multi, **kw) if rvp else None
        except AuditError as e:
            raise UserError(str(e)) from None
    return res, res_rvp


def _audit_builtin_rows(t, res, fams: list[str], mode: str | None, calibration, locked, corpus, report) -> list:
    """Rows of the built-in families (pooled over classes; f* and the call with a calibration);
    returns the (family, mode) pairs with no event."""
    from runner.analysis.audit import calibrate, default_mode
    from runner.report.html import write_calibration

    silent = []
    for f in fams:
        m = mode or default_mode(f)
        if m not in res.families[f]:
            raise UserError(f"mode: {m!r} is not counted for {f} (has {sorted(res.families[f])})")
        c, cal = res.families[f][m], None
        if c["ratio"] is None:
            silent.append((f, m))
        elif calibration:
            cal = calibrate(calibration, f, m, locked)
            c["call"] = cal.assess(corpus, c)
            report.setdefault("calibration", {})[f] = cal.to_json()
            write_calibration(cal, Path(calibration[0]) / "calibration")
        t.add_row(*_audit_row(f, m, c, cal))
    return silent


@app.command()
def audit(
    corpus: Path = typer.Argument(..., help="a built corpus folder, a Hugging Face dataset on disk, a .txt file "
                                            "or folder, or a .npy token stream"),
    rules: str = typer.Option("pronoun_gender,number_agreement", help=FAMILIES_HELP),
    calibration: Optional[list[Path]] = typer.Option(
        None, help="a finished sweep that varied support (repeatable): fits f* per rule"),
    prereg: Optional[Path] = typer.Option(
        None, help="the locked prereg whose classifier labels the calibration runs (default: none, the paper's "
                   "constants)"),
    mode: Optional[str] = typer.Option(
        None, help="built-in families' support mode: contested | windowed (default: contested where the family has "
                   "it); rule-versus-prior families show all their modes"),
    text_column: str = typer.Option("text", help="text column of a Hugging Face dataset"),
    tokenizer: Optional[Path] = typer.Option(
        None, help="tokenizer.json of a .npy token stream or of raw text (needed for rule-versus-prior families)"),
    workers: int = typer.Option(1, help="processes counting blocks in parallel (built-in families)"),
    pool: bool = typer.Option(False, "--pool", help="rule-versus-prior families: also pooled over cue classes"),
    multi_token_cues: bool = typer.Option(False, "--multi-token-cues",
                                          help="also count cue words of several tokens (matched as sequences)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="default runs/audit/<corpus name>.json"),
) -> None:
    """Support ratio per rule with a bootstrap CI (streamed), per cue class for rule-versus-prior
    families; with --calibration, f* and at risk / safe. Warns and exits 2 when a family has no event."""
    from rich.table import Table

    from cluster.cli_support import audit_rvp_rows, is_rvp, parse_families, silent_message
    from runner._io import write_json_atomic
    from runner.analysis.audit_rvp import silent

    fams = parse_families(rules, "rules")
    builtin, rvp = [f for f in fams if not is_rvp(f)], [f for f in fams if is_rvp(f)]
    if calibration and rvp:
        raise UserError(f"--calibration fits pooled built-in families only; leave {', '.join(rvp)} out of --rules")
    locked = _locked(prereg)
    res, res_rvp = _audit_counts(corpus, builtin, rvp, text_column=text_column, workers=workers, pool=pool,
                                 tokenizer=str(tokenizer) if tokenizer else None, multi_token_cues=multi_token_cues)
    first = res or res_rvp
    assert first is not None
    counted = {**(res.families if res else {}), **(res_rvp.families if res_rvp else {})}
    report = {"corpus": str(corpus), "n_docs": first.n_docs, "n_tokens": first.n_tokens,
              "seconds": round(first.seconds, 2), "tokens_per_second": round(first.tokens_per_second),
              "workers": workers, "families": counted}
    t = Table(title=f"{corpus}: {first.n_docs:,} documents, {first.n_tokens:,} tokens, "
                    f"{first.tokens_per_second:,.0f} tokens/s")
    for col in ("rule", "class", "mode", "rule events", "prior events", "support ratio [95% CI]", "f* [interval]",
                "call"):
        t.add_column(col)
    quiet = _audit_builtin_rows(t, res, builtin, mode, calibration, locked, corpus, report) if res else []
    if res_rvp:
        audit_rvp_rows(t, res_rvp.families, pool)
        quiet += silent(res_rvp.families)
    console.print(t)
    dest = write_json_atomic(json_out or Path("runs/audit") / f"{corpus.resolve().name}.json", report, default=float)
    console.print(f"wrote {dest}")
    if quiet:
        console.print(f"[yellow]warning:[/] {silent_message(quiet)}", highlight=False)
        raise UserError(f"no events for {', '.join(f'{f} ({m})' for f, m in quiet)}; see the warning above")


@app.command("monitor-replay")
def monitor_replay(
    path: Path = typer.Argument(..., help="a run, a runs folder or a sweep"),
    family: str = typer.Option("pronoun_gender", help="the watched rule family"),
    every: int = typer.Option(50, help="observe every N steps"),
    window: int = typer.Option(12, help="observations in the Theil-Sen fit"),
    confidence: float = typer.Option(0.95, help="of the Theil-Sen slope interval"),
    horizon: int = typer.Option(1000, help="warn if the projected crossing is within this many steps"),
) -> None:
    """Replay the live monitor on finished runs: first warning, collapse onset, lead time, false alarms."""
    from rich.table import Table

    from runner.analysis.monitor_replay import replay_run
    from runner.analysis.verdicts import find_runs
    from runner.train.monitor import TrendConfig

    try:
        runs = find_runs(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    k = TrendConfig(every=every, window=window, horizon=horizon, confidence=confidence)
    t = Table(title=f"monitor replay ({family}; Theil-Sen over {window} evals every {every} steps, horizon {horizon})")
    for col in ("run", "label", "warnings at", "onset", "CM cross", "lead (steps, to onset else CM cross)",
                "false alarm"):
        t.add_column(col)
    for d in runs:
        r = replay_run(d, family, k)
        t.add_row(d.name, str(r["label"]), ", ".join(map(str, r["warning_steps"])) or "-", str(r["onset"]),
                  str(r["cm_cross"]),
                  str(r["lead"]), "YES" if r["false_alarm"] else "")
    console.print(t)


