"""``ungrok`` commands for analysis: prereg lock/verify/amend, verdict, report, audit, monitor-replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cluster.cli_base import UserError, _locked, app, console, prereg_app


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
    rec = _locked(file).record
    console.print(f"ok: {file} matches its lock ({rec['sha256'][:16]}…, {len(rec['amendments'])} amendments)")


@prereg_app.command("amend")
def prereg_amend(
    file: Path = typer.Argument(..., help="the locked prereg TOML"),
    set_: list[str] = typer.Option(..., "--set", help="classifier.<constant>=<number>; repeatable"),
    reason: str = typer.Option(..., help="why (recorded in the chain and the report)"),
) -> None:
    """Append a dated, hash-chained amendment (applies to data produced after it)."""
    from runner.analysis.prereg import PreregError, amend

    changes = {}
    for item in set_:
        key, eq, val = item.partition("=")
        try:
            changes[key.strip()] = float(val) if "." in val or "e" in val else int(val)
        except ValueError:
            raise UserError(f"--set {item!r}: expected KEY=NUMBER, e.g. classifier.displaced=0.55") from None
        if not eq:
            raise UserError(f"--set {item!r}: expected KEY=NUMBER")
    try:
        rec = amend(file, changes, reason)
    except PreregError as e:
        raise UserError(str(e)) from None
    a = rec["amendments"][-1]
    console.print(f"amendment {a['n']} at {a['utc']}: {a['changes']} (hash {a['hash'][:12]}…)")


def print_verdict(v: dict, title: str) -> None:
    """Print a verdict: per-run labels, the prediction scoreboard and the dose-response table."""
    from rich.table import Table

    from runner.analysis.dose_response import treatment

    t = Table(title=title)
    for col in ("run", "status", "family", "label", "final", "final 95% CI", "control", "onset", "CM cross"):
        t.add_column(col)
    for r in v["runs"]:
        if r["sealed"]:
            t.add_row(r["run"], "sealed", "", "", "", "", "", "", "")
        for fam, f in r["families"].items():
            t.add_row(r["run"], r["status"], fam, f.get("label"), f"{f.get('final', float('nan')):.2f}",
                      str([round(x, 2) for x in f.get("final_ci", [])]),
                      "valid" if f.get("control_valid") else "INVALID",
                      str(f.get("onset")), str(f.get("cm_cross")))
    console.print(t)
    sb = Table(title="scoreboard")
    for col in ("id", "rule", "result", "status", "values / why"):
        sb.add_column(col)
    for p in v["predictions"] + v["falsifiers"] + v["dose_predictions"]:
        sb.add_row(p["id"], f"{p['family']} {p['select']}: {p['rule']}", p["result"], p["status"],
                   p.get("why") or str([round(x, 3) if isinstance(x, float) else x for x in p.get("values", [])]))
    console.print(sb)
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


@app.command()
def verdict(
    paths: list[Path] = typer.Argument(..., help="run folders, runs folders or sweeps (several are analysed together)"),
    prereg: Path = typer.Option(..., help="the locked prereg TOML"),
    unseal: bool = typer.Option(False, help="read quarantined seeds (logged beside the prereg)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="default <first path>/verdict.json"),
) -> None:
    """Score every run and every registered prediction; print a scoreboard and write JSON."""

    from runner._io import write_json_atomic
    from runner.analysis.verdicts import verdict as compute

    locked = _locked(prereg)
    path = paths[0]
    try:
        v = compute(paths if len(paths) > 1 else path, locked, unseal)
    except ValueError as e:
        raise UserError(str(e)) from None
    print_verdict(v, f"runs under {prereg}")
    dest = json_out or (path / "verdict.json")
    write_json_atomic(dest, json.loads(json.dumps(v, default=str)))
    console.print(f"wrote {dest}")


@app.command()
def report(
    paths: list[Path] = typer.Argument(..., help="run folders, runs folders or sweeps (several are reported together)"),
    prereg: Optional[Path] = typer.Option(None, help="the locked prereg TOML (default: none, all exploratory)"),
    unseal: bool = typer.Option(False, help="include quarantined seeds (logged)"),
    out: Optional[Path] = typer.Option(None, help="report folder (default <first path>/report)"),
) -> None:
    """Write the HTML report page (images embedded) and its PNGs; a localized run (ungrok mech
    localize) shows its components under its trajectories."""
    from mech.plots import report_section
    from runner.report.html import write_report

    locked = _locked(prereg)
    try:
        page = write_report(paths, locked, unseal, out, extra_sections=[report_section])
    except ValueError as e:
        raise UserError(str(e)) from None
    console.print(f"report: {page}")


def _audit_row(f: str, m: str, c: dict, cal) -> list[str]:
    """One row of the audit table: rule, mode, counts, ratio [CI], f* [interval], call."""
    fstar, call = "-", c.get("call", "-")
    if cal is not None:
        fit = cal.fit
        if fit.get("f_star"):
            fstar = (f"{fit['f_star']:.3g} [{fit['ci'][0]:.3g}, {fit['ci'][1]:.3g}] ({fit['method']}, "
                     f"{fit['n_points']} runs)")
        else:
            fstar = fit.get("why", "-")
    return [f, m, f"{c['rule']:,}", f"{c['prior']:,}", f"{c['ratio']:.3g} [{c['ci'][0]:.3g}, {c['ci'][1]:.3g}]",
            fstar, call]


@app.command()
def audit(
    corpus: Path = typer.Argument(..., help="a built corpus folder, a Hugging Face dataset on disk, a .txt file "
                                            "or folder, or a .npy token stream"),
    rules: str = typer.Option("pronoun_gender,number_agreement", help="rule families (comma-separated)"),
    calibration: Optional[list[Path]] = typer.Option(
        None, help="a finished sweep that varied support (repeatable): fits f* per rule"),
    prereg: Optional[Path] = typer.Option(
        None, help="the locked prereg whose classifier labels the calibration runs (default: none, the paper's "
                   "constants)"),
    mode: Optional[str] = typer.Option(
        None, help="support mode: contested | windowed (default: contested where the family has it)"),
    text_column: str = typer.Option("text", help="text column of a Hugging Face dataset"),
    tokenizer: Optional[Path] = typer.Option(
        None, help="tokenizer.json of a .npy token stream (or to use instead of the word-level one)"),
    workers: int = typer.Option(1, help="processes counting blocks in parallel"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="default runs/audit/<corpus name>.json"),
) -> None:
    """Support ratio per rule with a bootstrap CI (streamed); with --calibration, f* and at risk / safe."""
    from rich.progress import Progress
    from rich.table import Table

    from runner._io import write_json_atomic
    from runner.analysis.audit import AuditError, audit_corpus, calibrate, default_mode
    from runner.config import known_families
    from runner.report.html import write_calibration

    try:
        fams = known_families(tuple(f.strip() for f in rules.split(",") if f.strip()))
    except ValueError as e:
        raise UserError(f"rules: {e}") from None
    locked = _locked(prereg)
    with Progress(console=console, transient=True) as p:
        task = p.add_task(f"auditing {corpus}", total=None)
        try:
            res = audit_corpus(corpus, fams, text_column=text_column, tokenizer=str(tokenizer) if tokenizer else None,
                               workers=workers, progress=lambda n, tot: p.update(task, completed=n, total=tot))
        except AuditError as e:
            raise UserError(str(e)) from None
    report = {"corpus": str(corpus), "n_docs": res.n_docs, "n_tokens": res.n_tokens, "seconds": round(res.seconds, 2),
              "tokens_per_second": round(res.tokens_per_second), "workers": workers, "families": res.families}
    t = Table(title=f"{corpus}: {res.n_docs:,} documents, {res.n_tokens:,} tokens, "
                    f"{res.tokens_per_second:,.0f} tokens/s")
    for col in ("rule", "mode", "rule events", "prior events", "support ratio [95% CI]", "f* [interval]", "call"):
        t.add_column(col)
    for f in fams:
        m = mode or default_mode(f)
        if m not in res.families[f]:
            raise UserError(f"mode: {m!r} is not counted for {f} (has {sorted(res.families[f])})")
        c, cal = res.families[f][m], None
        if calibration:
            cal = calibrate(calibration, f, m, locked)
            c["call"] = cal.assess(corpus, c)
            report.setdefault("calibration", {})[f] = cal.to_json()
            write_calibration(cal, Path(calibration[0]) / "calibration")
        t.add_row(*_audit_row(f, m, c, cal))
    console.print(t)
    dest = write_json_atomic(json_out or Path("runs/audit") / f"{corpus.resolve().name}.json", report, default=float)
    console.print(f"wrote {dest}")


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


