"""The ``ungrok`` command line. Thin: parse, build typed configs, call runner functions.

Bad input is reported as one line naming the field and the fix (exit code 2) before any job
starts; no traceback for user errors.
"""

from __future__ import annotations

import json
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


class UserError(Exception):
    pass


def _validation_message(e: ValidationError, prefix: str = "") -> str:
    from runner.config import field_error

    return prefix + field_error(e)


def _corpus_config(preset: str, seed: int, n_stories: Optional[int], support: Optional[float],
                   text_column: str):
    from runner.config import CorpusConfig

    kw = {"name": preset, "seed": seed, "support": support, "text_column": text_column}
    if n_stories is not None:
        kw["n_stories"] = n_stories
    try:
        return CorpusConfig(**kw)
    except ValidationError as e:
        raise UserError(_validation_message(e, "corpus.")) from None


@corpus_app.command("build")
def corpus_build(
    preset: str = typer.Option("web", help="stories | web | synthetic | hf:<dataset folder>"),
    seed: int = typer.Option(0, help="generator seed"),
    out: Path = typer.Option(Path("runs/corpora"), help="parent folder of built corpora"),
    n_stories: Optional[int] = typer.Option(None, help="rows (stories); default 160,000"),
    support: Optional[float] = typer.Option(None, help="override the preset's support (0..1]"),
    text_column: str = typer.Option("text", help="text column of an hf: dataset"),
) -> None:
    """Build a corpus (deterministic from its config) and print its manifest."""
    from rich.progress import Progress

    from runner.corpora import build_corpus, load_corpus

    cfg = _corpus_config(preset, seed, n_stories, support, text_column)
    with Progress(console=console, transient=True) as p:
        task = p.add_task(f"building {cfg.dirname}", total=cfg.n_stories)
        path = build_corpus(cfg, out, progress=lambda n: p.update(task, completed=n))
    m = load_corpus(path).manifest
    console.print(f"[bold]{path}[/]: {m['n_rows']:,} rows, {m['n_tokens']:,} tokens, sha256 {m['sha256'][:16]}…")


@corpus_app.command("intervene")
def corpus_intervene(
    dose: str = typer.Argument(..., help="kill:<rate> | rescue:<dose>, e.g. kill:0.437 or rescue:3"),
    preset: str = typer.Option("stories", help="base corpus: stories | web | synthetic | hf:<dataset folder>"),
    seed: int = typer.Option(0, help="corpus generator seed"),
    out: Path = typer.Option(Path("runs/corpora"), help="parent folder of built corpora"),
    n_stories: Optional[int] = typer.Option(None, help="rows (stories); default 160,000"),
    support: Optional[float] = typer.Option(None, help="override the preset's support (0..1]"),
    families: str = typer.Option("pronoun_gender,number_agreement", help="rule families to edit (comma-separated)"),
    edit_seed: int = typer.Option(0, help="seed of the edit (which events flip, where injections go)"),
) -> None:
    """Build an intervened stream (kill or rescue) beside its corpus and print what it did."""
    from rich.table import Table

    from interventions import InterventionError
    from runner.config import RunConfig
    from runner.support import pooled
    from runner.train import build_streams

    fams = tuple(f.strip() for f in families.split(",") if f.strip())
    cfg_c = _corpus_config(preset, seed, n_stories, support, "text")
    try:
        cfg = RunConfig(corpus=cfg_c, probes={"families": fams}, dose=dose,
                        intervention={"families": fams, "seed": edit_seed}, train={"budget": "dn1"})
    except ValidationError as e:
        raise UserError(_validation_message(e)) from None
    if cfg.dose == "none":
        raise UserError("dose: give kill:<rate> or rescue:<dose>, not none")
    try:
        base, dosed = build_streams(cfg, out)
    except InterventionError as e:
        raise UserError(str(e)) from None
    m = json.loads((dosed / "manifest.json").read_text())
    base_support = json.loads((base / "manifest.json").read_text())
    from runner.support import corpus_support

    before = corpus_support(base, fams)
    t = Table(title=f"{dosed}: {m['n_tokens']:,} tokens ({base_support['n_tokens']:,} before), sha256 {m['sha256'][:16]}…")
    for col in ("family", "edit", "contested support before", "after", "windowed before", "after"):
        t.add_column(col)
    for f in fams:
        g = m["generator"]["per_family"][f]
        edit = (f"{g['n_flipped']:,} of {sum(g['eligible'].values()):,} rule-winning events flipped"
                if m["generator"]["kind"] == "kill" else
                f"{g['injected_events']:,} events injected in {g['injected_rows']:,} rows "
                f"({g['reference']['per_token']:.3g}/token x {m['generator']['dose']:g})")
        t.add_row(f, edit, f"{pooled(before[f], 'contested')['ratio']:.3g}", f"{pooled(m['support'][f], 'contested')['ratio']:.3g}",
                  f"{pooled(before[f], 'windowed')['ratio']:.3g}", f"{pooled(m['support'][f], 'windowed')['ratio']:.3g}")
    console.print(t)


@app.command()
def support(
    corpus: Path = typer.Argument(..., help="a built corpus folder (runs/corpora/web-s0)"),
    families: str = typer.Option("pronoun_gender,number_agreement", help="comma-separated rule families"),
    k: int = typer.Option(16, help="window after each cue (tokens)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="where to write JSON (default <corpus>/support.json)"),
) -> None:
    """Support frequency per rule family and cue class (windowed, bigram, contested)."""
    from rich.table import Table

    from runner.corpora import load_corpus
    from runner.support import count_support
    from runner.train import write_json_atomic

    c = load_corpus(corpus)
    fams = [f.strip() for f in families.split(",") if f.strip()]
    res = count_support(c.rows, c.tokenizer, fams, pad_id=c.pad_id, k=k)
    t = Table(title=f"support in {corpus} ({c.n_tokens:,} tokens)")
    for col in ("family", "class", "mode", "rule", "prior", "cues", "support_ratio"):
        t.add_column(col, justify="right" if col in ("rule", "prior", "cues", "support_ratio") else "left")
    for fam, classes in res.items():
        for cls, modes in classes.items():
            for mode, v in modes.items():
                t.add_row(fam, cls, mode, f"{v['rule']:,}", f"{v['prior']:,}", f"{v['cues']:,}", f"{v['ratio']:.3f}")
    console.print(t)
    dest = json_out or (corpus / "support.json")
    write_json_atomic(dest, {"corpus": str(corpus), "k": k, "families": res})
    console.print(f"wrote {dest}")


@app.command()
def train(
    corpus: str = typer.Option("web", help="stories | web | synthetic | hf:<dataset folder>"),
    budget: str = typer.Option("packed", help="packed | dn<ratio> (e.g. dn5, dn15)"),
    seed: int = typer.Option(42, help="training seed (init and data order)"),
    out: Path = typer.Option(Path("runs"), help="runs folder (corpora are built under <out>/corpora)"),
    steps: Optional[int] = typer.Option(None, help="training steps (default 5000)"),
    corpus_seed: int = typer.Option(0, help="corpus generator seed"),
    n_stories: Optional[int] = typer.Option(None, help="corpus rows (default 160,000)"),
    support: Optional[float] = typer.Option(None, help="override the corpus support (0..1]"),
    zero_stage: int = typer.Option(0, help="DeepSpeed ZeRO stage 0, 1 or 2"),
    battery: Optional[Path] = typer.Option(None, help="probe battery JSONL (default: generated)"),
    dose: str = typer.Option("none", help="none | kill:<rate> | rescue:<dose> (intervenes on every probed family)"),
    watch: Optional[str] = typer.Option(None, help="rule families the live monitor watches (warns before CM crosses zero)"),
    config: Optional[Path] = typer.Option(None, help="a RunConfig JSON; flags given explicitly are ignored"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Train one run through DeepSpeed, scoring probes at every checkpoint; resumes if interrupted."""
    from interventions import InterventionError
    from runner.config import RunConfig
    from runner.corpora import CorpusError
    from runner.train import prepare_run, train_run

    if config is not None:
        try:
            cfg = RunConfig.model_validate_json(config.read_text())
        except ValidationError as e:
            raise UserError(_validation_message(e)) from None
    else:
        cfg_c = _corpus_config(corpus, corpus_seed, n_stories, support, "text")
        tr = {"budget": budget, "seed": seed, "zero_stage": zero_stage}
        if steps is not None:
            tr["steps"] = steps
        probes = {"battery": str(battery)} if battery else {}
        try:
            cfg = RunConfig(corpus=cfg_c, train=tr, probes=probes, dose=dose)
        except ValidationError as e:
            raise UserError(_validation_message(e)) from None
    try:
        prepare_run(cfg, out)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        watched = tuple(f.strip() for f in watch.split(",")) if watch else ()
        run_dir = train_run(cfg, out, progress=progress, log=console.print, watch=watched)
    except (CorpusError, InterventionError) as e:  # includes the disjointness gate (before training)
        raise UserError(str(e)) from None
    console.print(f"run [bold]{run_dir}[/]  (ungrok show {run_dir})")


@app.command()
def show(
    run: Path = typer.Argument(..., help="a run folder (runs/<run-id>)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON only"),
    every: int = typer.Option(4, help="table: show every Nth checkpoint"),
) -> None:
    """A run's trajectory as a table and a PNG, and its figures (peak, final, onset, CM crossing)."""
    from runner.report import figures_table, plot_run, trajectory_table
    from runner.summary import write_summary

    from runner.store import is_run_dir

    if not is_run_dir(run):
        raise UserError(f"{run} is not a run folder (no run.json); pass runs/<run-id>")
    summary = write_summary(run)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(trajectory_table(run, every=every))
    console.print(figures_table(summary))
    console.print(f"plot: {plot_run(run, figures=summary['families'])}")


def _locked(prereg: Optional[Path]):
    from runner.prereg import PreregError, load_locked

    if prereg is None:
        return None
    try:
        return load_locked(prereg)
    except PreregError as e:
        raise UserError(str(e)) from None


@prereg_app.command("lock")
def prereg_lock(file: Path = typer.Argument(..., help="the prereg TOML")) -> None:
    """Lock the prereg: record its sha256, UTC time, ungrok version and git commit."""
    from runner.prereg import PreregError, lock, lock_path

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
    from runner.prereg import PreregError, amend

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


@app.command()
def verdict(
    paths: list[Path] = typer.Argument(..., help="run folders, runs folders or sweeps (several are analysed together)"),
    prereg: Path = typer.Option(..., help="the locked prereg TOML"),
    unseal: bool = typer.Option(False, help="read quarantined seeds (logged beside the prereg)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="default <first path>/verdict.json"),
) -> None:
    """Score every run and every registered prediction; print a scoreboard and write JSON."""
    from rich.table import Table

    from runner.train import write_json_atomic
    from runner.verdicts import verdict as compute

    locked = _locked(prereg)
    path = paths[0]
    try:
        v = compute(paths if len(paths) > 1 else path, locked, unseal)
    except ValueError as e:
        raise UserError(str(e)) from None
    t = Table(title=f"runs under {prereg}")
    for col in ("run", "status", "family", "label", "final", "final 95% CI", "control", "onset", "CM cross"):
        t.add_column(col)
    for r in v["runs"]:
        if r["sealed"]:
            t.add_row(r["run"], "sealed", "", "", "", "", "", "", "")
        for fam, f in r["families"].items():
            t.add_row(r["run"], r["status"], fam, f.get("label"), f"{f.get('final', float('nan')):.2f}",
                      str([round(x, 2) for x in f.get("final_ci", [])]), "valid" if f.get("control_valid") else "INVALID",
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
                dt.add_row(g["intervention"], g["family"], f"{g['corpus']}/{g['budget']}", lv["dose_name"],
                           str(lv["n_seeds"]), f"{sup:.3g}" if sup is not None else "-", f"{lv['mean_final']:.3f}",
                           f"{lv['mean_cm_final']:+.2f}", ", ".join(lv["labels"]))
            rho = g["rho_cm_final"]
            dt.add_row("", "", "", "rho(dose, CM final)", "", "", "", f"{rho:+.2f}" if rho is not None else "-", "")
        console.print(dt)
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
    """Write the HTML report page (images embedded) and its PNGs."""
    from runner.html_report import write_report

    locked = _locked(prereg)
    try:
        page = write_report(paths, locked, unseal, out)
    except ValueError as e:
        raise UserError(str(e)) from None
    console.print(f"report: {page}")


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="grid spec TOML (axes corpora, budgets, seeds, doses)"),
    out: Optional[Path] = typer.Option(None, help="sweep folder (default runs/sweeps/<spec name>)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (e.g. auto, 10.0.0.5:6379); default: local Ray in-process"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    node_ip_address: Optional[str] = typer.Option(None, help="this node's address for Ray (default 127.0.0.1 when local)"),
    dashboard: bool = typer.Option(False, help="start Ray's dashboard on 127.0.0.1 (local Ray only)"),
    progress: bool = typer.Option(True, help="live table of cells"),
    reuse: Optional[list[Path]] = typer.Option(None, help="another sweep folder whose complete cells with the same run id are copied in, not recomputed (repeatable)"),
) -> None:
    """Run the grid on Ray; rerunning skips finished cells and resumes unfinished ones."""
    from runner.grid import GridError, load_grid
    from cluster.sweep import StreamError, run_sweep

    try:
        g = load_grid(spec)
    except GridError as e:
        raise UserError(str(e)) from None
    out = out or Path("runs/sweeps") / g.name
    try:
        res = run_sweep(spec, out, address=address, num_cpus=num_cpus, progress=progress, dashboard=dashboard,
                        node_ip=node_ip_address, log=console.print, reuse=reuse)
    except (GridError, StreamError) as e:
        raise UserError(str(e)) from None
    console.print(f"sweep {res['sweep']}: {res['cells']} cells, ran {res['ran']}, skipped {res['skipped']}, "
                  f"failed {len(res['failed'])}; wall {res['wall_seconds']} s, sum of runs {res['sum_run_seconds']} s, "
                  f"efficiency {res['efficiency']}")
    if res["failed"]:
        Console(stderr=True).print(f"[red]failed cells[/]: {', '.join(res['failed'])} (tracebacks in {out}/manifest.json)")
        raise typer.Exit(1)


@app.command()
def status(sweep_dir: Path = typer.Argument(..., help="a sweep folder")) -> None:
    """Cell, state, step and label so far; works while the sweep runs and after."""
    from cluster.sweep import status_table

    if not (sweep_dir / "grid.toml").exists():
        raise UserError(f"{sweep_dir} is not a sweep folder (no grid.toml)")
    console.print(status_table(sweep_dir))


@app.command()
def submit(
    spec: Path = typer.Argument(..., help="grid spec TOML"),
    address: str = typer.Option(..., help="the Jobs API, e.g. http://HEAD:8265"),
    out: Path = typer.Option(..., help="sweep folder on the cluster's shared filesystem"),
    follow: bool = typer.Option(True, help="print the job's logs until it ends"),
) -> None:
    """Submit the sweep as a Ray job; prints the job id (and follows its logs)."""
    from runner.grid import GridError
    from cluster.sweep import submit as do_submit

    try:
        job_id, st = do_submit(spec, address, out, follow=follow, log=console.print)
    except GridError as e:
        raise UserError(str(e)) from None
    console.print(f"job {job_id}: {st}")
    if st not in ("SUCCEEDED", "SUBMITTED"):
        raise typer.Exit(1)


@app.command()
def audit(
    corpus: Path = typer.Argument(..., help="a built corpus folder, a Hugging Face dataset on disk, a .txt file or folder, or a .npy token stream"),
    rules: str = typer.Option("pronoun_gender,number_agreement", help="rule families (comma-separated)"),
    calibration: Optional[list[Path]] = typer.Option(None, help="a finished sweep that varied support (repeatable): fits f* per rule"),
    mode: Optional[str] = typer.Option(None, help="support mode: contested | windowed (default: contested where the family has it)"),
    text_column: str = typer.Option("text", help="text column of a Hugging Face dataset"),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer.json of a .npy token stream (or to use instead of the word-level one)"),
    workers: int = typer.Option(1, help="processes counting blocks in parallel"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="default runs/audit/<corpus name>.json"),
) -> None:
    """Support ratio per rule with a bootstrap CI (streamed); with --calibration, f* and at risk / safe."""
    from rich.progress import Progress
    from rich.table import Table

    from runner.audit import (AuditError, audit_corpus, calibration_points, default_mode, fit_critical_ratio,
                              plot_calibration, risk, write_json)

    fams = [f.strip() for f in rules.split(",") if f.strip()]
    try:
        from runner.rules import RULES

        for f in fams:
            RULES.get(f)
    except KeyError as e:
        raise UserError(f"rules: {e.args[0]}") from None
    with Progress(console=console, transient=True) as p:
        task = p.add_task(f"auditing {corpus}", total=None)
        try:
            res = audit_corpus(corpus, fams, text_column=text_column, tokenizer=str(tokenizer) if tokenizer else None,
                               workers=workers, progress=lambda n, tot: p.update(task, completed=n, total=tot))
        except AuditError as e:
            raise UserError(str(e)) from None
    dest = json_out or Path("runs/audit") / f"{corpus.resolve().name}.json"
    report = {"corpus": str(corpus), "n_docs": res.n_docs, "n_tokens": res.n_tokens, "seconds": round(res.seconds, 2),
              "tokens_per_second": round(res.tokens_per_second), "workers": workers, "families": res.families}
    t = Table(title=f"{corpus}: {res.n_docs:,} documents, {res.n_tokens:,} tokens, {res.tokens_per_second:,.0f} tokens/s")
    for col in ("rule", "mode", "rule events", "prior events", "support ratio [95% CI]", "f* [interval]", "call"):
        t.add_column(col)
    for f in fams:
        m = mode or default_mode(f)
        if m not in res.families[f]:
            raise UserError(f"mode: {m!r} is not counted for {f} (has {sorted(res.families[f])})")
        c = res.families[f][m]
        fstar, call = "-", "-"
        if calibration:
            pts = calibration_points(calibration, f, m)
            fit = fit_critical_ratio(pts)
            c["call"] = call = risk(c["ci"], fit)
            report.setdefault("calibration", {})[f] = {"mode": m, "sweeps": [str(x) for x in calibration],
                                                       "points": pts, "fit": fit, "call": call}
            cal_dir = Path(calibration[0]) / "calibration"
            cal_dir.mkdir(exist_ok=True)
            write_json(cal_dir / f"{f}-{m}.json", {"family": f, "mode": m, "points": pts, "fit": fit,
                                                   "audited": {"corpus": str(corpus), **c}})
            plot_calibration(pts, fit, f, m, cal_dir / f"{f}-{m}.png", audited=c)
            if fit.get("f_star"):
                fstar = f"{fit['f_star']:.3g} [{fit['ci'][0]:.3g}, {fit['ci'][1]:.3g}] ({fit['method']}, {fit['n_points']} runs)"
            else:
                fstar = fit.get("why", "-")
        t.add_row(f, m, f"{c['rule']:,}", f"{c['prior']:,}", f"{c['ratio']:.3g} [{c['ci'][0]:.3g}, {c['ci'][1]:.3g}]",
                  fstar, call)
    console.print(t)
    write_json(dest, report)
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

    from runner.monitor import TrendConfig, replay_run
    from runner.verdicts import find_runs

    try:
        runs = find_runs(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    k = TrendConfig(every=every, window=window, horizon=horizon, confidence=confidence)
    t = Table(title=f"monitor replay ({family}; Theil-Sen over {window} evals every {every} steps, horizon {horizon})")
    for col in ("run", "label", "warnings at", "onset", "CM cross", "lead (steps, to onset else CM cross)", "false alarm"):
        t.add_column(col)
    for d in runs:
        r = replay_run(d, family, k)
        t.add_row(d.name, str(r["label"]), ", ".join(map(str, r["warning_steps"])) or "-", str(r["onset"]), str(r["cm_cross"]),
                  str(r["lead"]), "YES" if r["false_alarm"] else "")
    console.print(t)


@mech_app.command("capture")
def mech_capture(
    path: Path = typer.Argument(..., help="a run folder, or a sweep (every complete run, one Ray task each)"),
    steps: Optional[str] = typer.Option(None, help="comma-separated checkpoint steps (default: all)"),
    batch_size: int = typer.Option(64, help="items per forward pass (bounds memory)"),
    names: Optional[str] = typer.Option(None, help="activation kinds or hook names to keep (comma-separated; default all)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (sweeps)"),
) -> None:
    """Capture residual stream, per-head outputs, attention and answer logits into the run's zarr group."""
    from cluster.mech_stage import run_stage

    kw = {"steps": [int(x) for x in steps.split(",")] if steps else None, "batch_size": batch_size,
          "names_filter": [n.strip() for n in names.split(",")] if names else None}
    res = _mech_run("capture", path, address, kw)
    console.print(f"captured {sum('error' not in r for r in res)} run(s); open with mech.capture.open_capture(run, family)")


@mech_app.command("localize")
def mech_localize(
    path: Path = typer.Argument(..., help="a run folder, or a sweep (every complete run, one Ray task each)"),
    family: Optional[str] = typer.Option(None, help="rule family (default: every family of the battery)"),
    top_k: int = typer.Option(2, help="heads ablated in the check"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (sweeps)"),
) -> None:
    """DLA, activation patching, attention and the embedding scalar across checkpoints; ranked table,
    heatmaps and an ablation check in <run>/mech/."""
    from mech.localize import summary_lines

    res = _mech_run("localize", path, address, {"family": family, "top_k": top_k})
    import json as _json

    for r in res:
        if "json" in r:
            doc = _json.loads(Path(r["json"]).read_text())
            for fam, fr in doc["families"].items():
                console.print("\n".join(summary_lines(fr)), highlight=False)
            console.print(f"page: {r['html']}")


def _mech_run(stage: str, path: Path, address, kw: dict) -> list[dict]:
    from cluster.mech_stage import run_stage

    try:
        res = run_stage(stage, path, address=address, log=console.print, **kw)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    failed = [r for r in res if "error" in r]
    if failed:
        Console(stderr=True).print(f"[red]{len(failed)} run(s) failed[/]: " + "; ".join(f"{r['run']}: {r['error']}" for r in failed))
        raise typer.Exit(1)
    return res


@app.command()
def public(
    models: str = typer.Option(..., help="comma-separated model names, e.g. pythia-70m,pythia-160m,pythia-410m"),
    revisions: str = typer.Option("pythia:12", help="step0,step1000,... | pythia (the whole schedule) | pythia:N (N spread over it)"),
    source: str = typer.Option("hub", help="hub[:<org>] (Hugging Face; honours HF_HUB_OFFLINE and its cache) or local:<dir> (a mirror <dir>/<model>/<revision>/)"),
    battery: Path = typer.Option(..., help="probe battery JSONL, e.g. ../shared/reference/batteries/rvp4.jsonl"),
    out: Path = typer.Option(Path("runs/public"), help="one run folder per model is written here"),
    families: Optional[str] = typer.Option(None, help="comma-separated battery families (default: all)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster; default: local Ray in-process"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    cpus_per_task: float = typer.Option(1, help="CPUs per (model, revision) task"),
    progress: bool = typer.Option(True, help="progress bar"),
) -> None:
    """Score public checkpoint series (Pythia or any GPT-NeoX-style suite) with the probes, on Ray."""
    from mech.public import PublicError
    from runner.batteries import BatteryError
    from cluster.public import run_public

    fams = [f.strip() for f in families.split(",")] if families else None
    try:
        res = run_public([m.strip() for m in models.split(",")], revisions, source, battery, out,
                         address=address, num_cpus=num_cpus, cpus_per_task=cpus_per_task, families=fams,
                         progress=progress, log=console.print)
    except (PublicError, BatteryError) as e:
        raise UserError(str(e)) from None
    console.print(f"scored {res['scored']}, skipped {res['skipped']} (already scored), failed {len(res['failed'])}; "
                  f"{res['wall_seconds']} s. Runs: {', '.join(res['runs'])}")
    console.print(f"next: ungrok report {out}")
    if res["failed"]:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ungrok`` console script."""
    try:
        app(args=argv if argv is not None else sys.argv[1:], standalone_mode=False)
    except UserError as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {e}", highlight=False)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
