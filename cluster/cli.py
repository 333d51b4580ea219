"""The ``ungrok`` command line. Thin: parse, build typed configs, call runner/cluster functions.

Bad input is reported as one line naming the field and the fix (exit code 2) before any job
starts; no traceback for user errors. This module holds corpus, training, sweep and demo
commands; ``cluster.cli_analysis`` and ``cluster.cli_mech`` register the rest on the same app.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cluster.cli_base import (
    PREREG_OPTION,
    UNSEAL_OPTION,
    UserError,
    _validation_message,
    app,
    check_quarantine,
    console,
    corpus_app,
    main,
    plain_log,
)
from cluster.cli_checks import show_files, warn_short
from cluster.cli_corpus import corpus_config as _corpus_config
from cluster.cli_corpus import rows_fill_context, run_corpus
from cluster.cli_plan import ARM_OPTION, PRESET_OPTION, preset_config
from cluster.cli_rescore import BATTERY_OPTION, MAX_UNKNOWN_OPTION, scores_of
from cluster.cli_support import FAMILIES_HELP


@corpus_app.command("intervene")
def corpus_intervene(
    dose: str = typer.Argument(..., help="kill:<rate> | kill:ratio=<r> | rescue:<d> (x delta) | kill-contested:<rate> "
                                         "| rescue-contest:<dose>, e.g. kill:1.0 or rescue:3"),
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
    from interventions.doses import describe
    from runner.config import RunConfig
    from runner.data.streams import build_streams
    from runner.data.support import pooled

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
    from runner.data.support import corpus_support

    before = corpus_support(base, fams)
    t = Table(title=f"{dosed}: {m['n_tokens']:,} tokens ({base_support['n_tokens']:,} before), "
                    f"sha256 {m['sha256'][:16]}…")
    for col in ("family", "edit", "contested support before", "after", "windowed before", "after"):
        t.add_column(col)
    for f in fams:
        g = m["generator"]["per_family"][f]
        edit = describe(m["generator"], g)
        ratios = [f"{pooled(sup, mode)['ratio']:.3g}" for mode in ("contested", "windowed")
                  for sup in (before[f], m["support"][f])]
        t.add_row(f, edit, *ratios)
    console.print(t)


@app.command()
def support(
    corpus: Path = typer.Argument(..., help="a built corpus folder (runs/corpora/web-s0); for rule-versus-prior "
                                            "families also a .txt file or folder (one document per line), a Hugging "
                                            "Face dataset on disk or a .npy token stream, with --tokenizer"),
    families: str = typer.Option("pronoun_gender,number_agreement", help=FAMILIES_HELP),
    k: int = typer.Option(16, min=1, help="window after each cue (tokens)"),
    json_out: Optional[Path] = typer.Option(None, "--json",
                                            help="where to write this report (default <corpus>/support.json)"),
    tokenizer: Optional[Path] = typer.Option(None, help="tokenizer.json of raw text or a .npy stream"),
    text_column: str = typer.Option("text", help="text column of a Hugging Face dataset"),
    multi_token_cues: bool = typer.Option(False, "--multi-token-cues",
                                          help="also count cue words of several tokens (matched as sequences)"),
    pool: bool = typer.Option(False, "--pool", help="also show counts pooled over cue classes"),
) -> None:
    """Support frequency per rule family and cue class (windowed, bigram, contested; frame bigram
    and a/an for rule-versus-prior families), per document. Exits 2, naming the family, when a
    counter finds no event at all (its ratio is None, never 1).

    Counts of a built corpus are cached under <corpus>/support/, one file per (family, k, counting
    version, corpus); the report written to --json is for reading only: nothing reads it back."""
    from cluster.cli_support import parse_families, print_cues, silent_message, support_table
    from runner._io import write_json_atomic
    from runner.analysis.audit import AuditError
    from runner.analysis.audit_rvp import support_counts
    from runner.data.corpora import CorpusError
    from runner.data.support import SUPPORT_VERSION

    fams = parse_families(families, "families")
    try:
        rep = support_counts(corpus, list(fams), k=k, tokenizer=str(tokenizer) if tokenizer else None,
                             text_column=text_column, multi_token_cues=multi_token_cues, pool=pool)
    except (AuditError, CorpusError) as e:
        raise UserError(str(e)) from None
    console.print(support_table(f"support in {corpus} ({rep['n_tokens']:,} tokens, k={k})", rep["counts"]))
    print_cues(rep["cues"])
    dest = json_out or (corpus / "support.json" if corpus.is_dir() else corpus.with_suffix(".support.json"))
    write_json_atomic(dest, {"corpus": str(corpus), "k": k, "version": SUPPORT_VERSION, "n_tokens": rep["n_tokens"],
                             "families": rep["counts"], "cue_words": rep["cues"]})
    console.print(f"wrote {dest}")
    if rep["silent"]:
        raise UserError(silent_message(rep["silent"]))


def _train_config(config: Optional[Path], preset: Optional[str], arm: Optional[str], corpus, train: dict,
                  probes: dict, dose: str):
    """The run ``ungrok train`` was asked for: a RunConfig JSON as is, else the flags' sections
    (over a preset's, if any; ``corpus()`` gives the CorpusConfig), with rows as long as the
    context on a built corpus."""
    from runner.config import RunConfig

    if config is None:
        return rows_fill_context(preset_config(preset, arm, corpus(), train=train, probes=probes, dose=dose))
    if not config.is_file():
        raise UserError(f"--config {config}: no such file; pass a RunConfig JSON (a run's config.json)")
    try:
        return RunConfig.model_validate_json(config.read_text())
    except ValidationError as e:
        raise UserError(_validation_message(e, f"--config {config}: ")) from None


@app.command()
def train(
    corpus: str = typer.Option("web", help="stories | web | synthetic | hf:<dataset folder> | the --name of a "
                                           "corpus built from --source under <out>/corpora"),
    budget: str = typer.Option("packed", help="packed | dn<ratio> (e.g. dn5, dn1.5)"),
    seed: int = typer.Option(42, help="training seed (init and data order)"),
    out: Path = typer.Option(Path("runs"), help="runs folder (corpora are built under <out>/corpora)"),
    steps: Optional[int] = typer.Option(None, help="training steps (default 5000)"),
    corpus_seed: int = typer.Option(0, help="corpus generator seed"),
    n_stories: Optional[int] = typer.Option(None, help="corpus rows (default 160,000)"),
    support: Optional[float] = typer.Option(None, help="override the corpus support (0..1]"),
    zero_stage: int = typer.Option(0, help="DeepSpeed ZeRO stage 0, 1 or 2"),
    battery: Optional[Path] = typer.Option(None, help="probe battery JSONL, every family scored (default: generated)"),
    max_unknown: Optional[float] = MAX_UNKNOWN_OPTION,
    dose: str = typer.Option("none", help="none | kill:<rate> | rescue:<dose> (intervenes on every probed family)"),
    watch: Optional[str] = typer.Option(
        None, help="rule families the live monitor watches (warns before CM crosses zero)"),
    config: Optional[Path] = typer.Option(None, help="a RunConfig JSON; flags given explicitly are ignored"),
    preset: Optional[str] = PRESET_OPTION,
    arm: Optional[str] = ARM_OPTION,
    progress: bool = typer.Option(True, help="show a progress bar"),
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
) -> None:
    """Train one run through DeepSpeed, scoring probes at every checkpoint; resumes if interrupted.
    A seed quarantined by the prereg is refused unless unsealed."""
    from interventions import InterventionError
    from runner._io import hold_folder
    from runner.data.corpora import CorpusError
    from runner.data.streams import BudgetError
    from runner.scoring import UnknownTokensError
    from runner.train import prepare_run, train_run
    from runner.train.monitor import monitor_callback

    cfg = _train_config(config, preset, arm,
                        lambda: run_corpus(corpus, out / "corpora", corpus_seed, n_stories, support),
                        {"budget": budget, "seed": seed, "zero_stage": zero_stage,
                         **({"steps": steps} if steps is not None else {})},
                        {**({"battery": str(battery)} if battery else {}),
                         **({"max_unknown": max_unknown} if max_unknown is not None else {})}, dose)
    check_quarantine(prereg, {cfg.run_id: cfg.train.seed}, unseal, "train")
    warn_short([cfg])
    try:
        prepare_run(cfg, out)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        watched = tuple(f.strip() for f in watch.split(",")) if watch else ()
        callbacks = [monitor_callback(watched, log=plain_log)] if watched else []
        with hold_folder(out / cfg.run_id, "run folder"):  # a second `train` of this run refuses (exit 3)
            run_dir = train_run(cfg, out, callbacks=callbacks, progress=progress, log=plain_log)
    except (CorpusError, InterventionError, BudgetError, UnknownTokensError) as e:  # all before training starts
        raise UserError(str(e)) from None
    console.print(f"run [bold]{run_dir}[/]  (ungrok show {run_dir})")


@app.command()
def show(
    run: Path = typer.Argument(..., help="a run folder (runs/<run-id>)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON only"),
    every: int = typer.Option(4, help="table: show every Nth checkpoint"),
    battery: Optional[str] = BATTERY_OPTION,
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
) -> None:
    """A run's trajectory as a table and a PNG, and its figures (peak, final, onset, CM crossing);
    --battery NAME: those of a rescored battery. A run of a seed quarantined by the prereg is
    refused unless unsealed."""
    from runner.analysis.verdicts import run_seeds
    from runner.report.tables import baseline_table, figures_table, trajectory_table, window_table
    from runner.store import is_run_dir
    from runner.trajectory import summary_of

    if not is_run_dir(run):
        raise UserError(f"{run} is not a run folder (no run.json); pass runs/<run-id>")
    if every < 1:
        raise UserError(f"--every {every}: show every Nth checkpoint, N >= 1")
    with scores_of(battery):
        try:  # a damaged config.json (the seed and the dose window are read from it)
            check_quarantine(prereg, run_seeds([run]), unseal, "show")
            summary = summary_of(run)  # computed; --json writes nothing (a read-only archive works)
        except ValueError as e:
            raise UserError(str(e)) from None
        if as_json:
            print(json.dumps(summary, indent=2))
            return
        console.print(trajectory_table(run, every=every))
        console.print(figures_table(summary))
        for extra in (window_table(summary), baseline_table(run, summary)):
            if extra is not None:
                console.print(extra)
        console.print(show_files(run, summary), markup=False)



def _print_sweep_result(res, sweep_dir: Path) -> None:
    """One summary line of a finished ``run_sweep`` (a ``SweepResult``); exit 1 naming the failed
    cells, if any."""
    console.print(f"sweep {res.sweep}: {res.cells} cells, ran {res.ran}, skipped {len(res.skipped)}, "
                  f"failed {len(res.failed)}; wall {res.wall_seconds} s, sum of runs {res.sum_run_seconds} s, "
                  f"efficiency {res.efficiency}", markup=False)
    if res.failed:
        Console(stderr=True).print(f"[red]failed cells[/]: {escape(', '.join(res.failed))} "
                                   f"(tracebacks in {sweep_dir}/manifest.json)")
        raise typer.Exit(1)


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="grid spec TOML (axes corpora, budgets, seeds, doses)"),
    out: Optional[Path] = typer.Option(None, help="sweep folder (default runs/sweeps/<spec name>)"),
    address: Optional[str] = typer.Option(
        None, help="an existing Ray cluster (e.g. auto, 10.0.0.5:6379); default: local Ray in-process"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    node_ip_address: Optional[str] = typer.Option(
        None, help="this node's address for Ray (default 127.0.0.1 when local)"),
    dashboard: bool = typer.Option(False, help="start Ray's dashboard on 127.0.0.1 (local Ray only)"),
    progress: bool = typer.Option(True, help="live table of cells"),
    reuse: Optional[list[Path]] = typer.Option(
        None, help="another sweep folder whose complete cells with the same run id are copied in, "
                   "not recomputed (repeatable)"),
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
    executor: str = typer.Option("ray", help="ray, or processes: local process pools, no Ray (one machine)"),
    workers: Optional[int] = typer.Option(None, help="processes: cells at a time (default: cores / cell CPUs)"),
    gpu_workers: int = typer.Option(0, help="processes: how many of those cells run on the CUDA device"),
) -> None:
    """Run the grid on Ray (or, with --executor processes, in local process pools); rerunning skips
    finished cells and resumes unfinished ones. A grid with seeds quarantined by the prereg is
    refused unless unsealed."""
    from cluster.sweep import StreamError, run_sweep
    from cluster.sweep_local import run_sweep_local
    from runner.grid import GridError, load_grid

    try:
        g = load_grid(spec)
    except GridError as e:
        raise UserError(str(e)) from None
    out = out or Path("runs/sweeps") / g.name
    check_quarantine(prereg, {c.label: c.seed for c in g.cells()}, unseal, "sweep")
    warn_short(c.config for c in g.cells())
    if executor not in ("ray", "processes"):
        raise UserError(f"--executor {executor!r}: use ray or processes")
    try:
        res = (run_sweep_local(spec, out, workers=workers, gpu_workers=gpu_workers, progress=progress, log=plain_log,
                               reuse=reuse) if executor == "processes" else
               run_sweep(spec, out, address=address, num_cpus=num_cpus, progress=progress, dashboard=dashboard,
                         node_ip=node_ip_address, log=plain_log, reuse=reuse))
    except (GridError, StreamError) as e:
        raise UserError(str(e)) from None
    _print_sweep_result(res, out)


@app.command()
def status(
    sweep_dir: Path = typer.Argument(..., help="a sweep folder"),
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
) -> None:
    """Cell, state, step and label so far; works while the sweep runs and after. A sweep with
    seeds quarantined by the prereg is refused unless unsealed."""
    from cluster.sweep import status_table
    from cluster.sweep_plan import Sweep
    from runner.grid import GridError

    if not (sweep_dir / "grid.toml").exists():
        raise UserError(f"{sweep_dir} is not a sweep folder (no grid.toml)")
    try:
        cells = Sweep(sweep_dir).cells
    except GridError as e:
        raise UserError(str(e)) from None
    check_quarantine(prereg, {c.label: c.seed for c in cells}, unseal, "status")
    console.print(status_table(sweep_dir))


@app.command()
def submit(
    spec: Path = typer.Argument(..., help="grid spec TOML"),
    address: str = typer.Option(..., help="the Jobs API, e.g. http://HEAD:8265"),
    out: Path = typer.Option(..., help="sweep folder on the cluster's shared filesystem"),
    follow: bool = typer.Option(True, help="print the job's logs until it ends"),
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
) -> None:
    """Submit the sweep as a Ray job; prints the job id (and follows its logs). A grid with seeds
    quarantined by the prereg is refused here, before submission, unless unsealed."""
    from cluster.sweep import submit as do_submit
    from runner.grid import GridError, load_grid

    try:
        check_quarantine(prereg, {c.label: c.seed for c in load_grid(spec).cells()}, unseal, "submit")
        job_id, st = do_submit(spec, address, out, follow=follow, log=plain_log)
    except GridError as e:
        raise UserError(str(e)) from None
    console.print(f"job {job_id}: {st}")
    if st not in ("SUCCEEDED", "SUBMITTED"):
        raise typer.Exit(1)



@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="demo folder: sweep/, verdict.json, report/"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    progress: bool = typer.Option(True, help="live table of cells"),
    open_report: bool = typer.Option(False, "--open", help="open the report in a browser when done"),
    reuse: Optional[list[Path]] = typer.Option(
        None, help="a sweep folder whose complete cells with the same run id are copied in (repeatable)"),
) -> None:
    """The embedded default end to end: the tour grid (web-adjacent undosed + rescued, stories-adjacent
    undosed + killed) on a local Ray, the verdict under the locked examples/prereg_tour.toml, the report."""
    from cluster.cli_analysis import print_verdict
    from cluster.demo import TOUR_PREREG, run_demo
    from cluster.sweep import StreamError
    from runner.analysis.prereg import PreregError
    from runner.grid import GridError

    try:
        r = run_demo(out, num_cpus=num_cpus, progress=progress, reuse=reuse, log=plain_log)
    except (PreregError, GridError, StreamError) as e:
        raise UserError(str(e)) from None
    _print_sweep_result(r["sweep"], out / "sweep")
    print_verdict(r["verdict"], f"demo runs under {TOUR_PREREG.name}")
    console.print(f"wrote {r['verdict_json']}")
    console.print(f"[bold]report: {r['report']}[/] (demo finished in {r['seconds']:.0f} s)")
    if open_report:
        import webbrowser

        webbrowser.open(r["report"].resolve().as_uri())


# Register the remaining commands on the same app (import for the side effect).
from cluster import (  # noqa: E402,F401
    cli_analysis,
    cli_baseline,  # noqa: E402,F401
    cli_classify,
    cli_corpus,
    cli_mech,
    cli_plan,
    cli_rescore,
)

__all__ = ["app", "main"]

if __name__ == "__main__":
    sys.exit(main())
