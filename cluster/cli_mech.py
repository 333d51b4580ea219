"""``ungrok`` commands for mechanism and public checkpoints: mech capture/localize/appendix, public."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cluster.cli_base import PREREG_OPTION, UNSEAL_OPTION, UserError, app, check_quarantine, console, mech_app


@mech_app.command("capture")
def mech_capture(
    path: Path = typer.Argument(..., help="a run folder, or a sweep (every complete run, one Ray task each)"),
    steps: Optional[str] = typer.Option(None, help="comma-separated checkpoint steps (default: all)"),
    batch_size: int = typer.Option(64, help="items per forward pass (bounds memory)"),
    names: Optional[str] = typer.Option(
        None, help="activation kinds or hook names to keep (comma-separated; default all)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (sweeps)"),
) -> None:
    """Capture residual stream, per-head outputs, attention and answer logits into the run's zarr group."""

    kw = {"steps": [int(x) for x in steps.split(",")] if steps else None, "batch_size": batch_size,
          "names_filter": [n.strip() for n in names.split(",")] if names else None}
    res = _mech_run("capture", path, address, kw)
    console.print(f"captured {sum('error' not in r for r in res)} run(s); "
                  "open with mech.capture.open_capture(run, family)")


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
            for fr in doc["families"].values():
                console.print("\n".join(summary_lines(fr)), highlight=False)
            console.print(f"page: {r['html']}")


@mech_app.command("appendix")
def mech_appendix(
    path: Path = typer.Argument(..., help="a run folder, or a sweep (every complete run, one Ray task each)"),
    family: Optional[str] = typer.Option(None, help="rule family (default: every family of the battery)"),
    measures: Optional[str] = typer.Option(
        None, help="comma-separated subset of decompose,carrier,decode,crosspatch,direction,bootstrap (default all)"),
    source: str = typer.Option("auto", help="auto (the zarr capture when it holds the rows, else the weights) | "
                                            "capture (the capture or an error) | weights (always recompute)"),
    capture: bool = typer.Option(False, "--capture", help="capture what the zarr capture lacks first (written "
                                                          "into the run's group)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster (sweeps)"),
) -> None:
    """The paper's mechanism measures (appendix I) from the zarr capture: logit-gap decomposition, carrier head,
    cue decodability, peak<->final patching, direction specificity, bootstrap; <run>/mech/appendix.json + PNGs,
    runs side by side here and in `ungrok report`."""
    from mech.appendix import MEASURES
    from mech.appendix_report import columns_for, compare_lines

    chosen = tuple(m.strip() for m in measures.split(",")) if measures else MEASURES
    bad = sorted(set(chosen) - set(MEASURES))
    if bad:
        raise UserError(f"unknown measure(s) {', '.join(bad)}; choose from {', '.join(MEASURES)}")
    if source not in ("auto", "capture", "weights"):
        raise UserError(f"--source must be auto, capture or weights, got {source!r}")
    res = _mech_run("appendix", path, address, {"family": family, "measures": chosen, "source": source,
                                                  "capture_missing": capture})
    import json as _json

    runs = [Path(r["run"]) for r in res]
    fams = list(dict.fromkeys(f for r in res for f in _json.loads(Path(r["json"]).read_text())["families"]))
    for fam in fams:
        console.print(f"\n{fam}", highlight=False)
        console.print("\n".join(compare_lines(columns_for(runs, fam))), highlight=False, markup=False)
    console.print(f"results: {', '.join(r['json'] for r in res)}")


def _mech_run(stage: str, path: Path, address, kw: dict) -> list[dict]:
    from cluster.mech_stage import complete_runs, run_stage
    from runner.store import RunDir

    try:
        bare = [r for r in complete_runs(path) if not RunDir(r).weight_files()]
        if bare:  # e.g. a copy without its weights/ folder: mech reads the saved weights of every checkpoint
            raise UserError(f"{bare[0]}: no saved weights (weights/step_*.safetensors); mech {stage} needs them")
        res = run_stage(stage, path, address=address, log=console.print, **kw)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    failed = [r for r in res if "error" in r]
    if failed:
        Console(stderr=True).print(f"[red]{len(failed)} run(s) failed[/]: "
                                   + "; ".join(f"{r['run']}: {r['error']}" for r in failed))
        raise typer.Exit(1)
    return res


@app.command()
def public(
    models: str = typer.Option(..., help="comma-separated model names, e.g. pythia-70m,pythia-160m,pythia-410m"),
    revisions: str = typer.Option(
        "pythia:12", help="step0,step1000,... | pythia (the whole schedule) | pythia:N (N spread over it) | all "
                          "(every checkpoint of a local: or run: source)"),
    source: str = typer.Option(
        "hub", help="hub[:<org>] (Hugging Face; honours HF_HUB_OFFLINE and its cache), local:<dir> (a mirror "
                    "<dir>/<model>/<revision>/) or run:<dir> (ungrok runs <dir>/<run-id>/, models = run ids)"),
    bos: bool = typer.Option(False, "--bos/--no-bos", help="prepend the tokenizer's start token (the paper scores "
                                                          "without; an ungrok run uses the one it trained with)"),
    max_unknown: float = typer.Option(1.0, min=0.0, max=1.0,
                                      help="refuse a checkpoint whose tokenizer leaves more than this fraction of "
                                           "items with unknown tokens"),
    battery: Path = typer.Option(..., help="probe battery JSONL, e.g. ../shared/reference/batteries/rvp4.jsonl"),
    out: Path = typer.Option(Path("runs/public"), help="one run folder per model is written here"),
    families: Optional[str] = typer.Option(None, help="comma-separated battery families (default: all)"),
    address: Optional[str] = typer.Option(None, help="an existing Ray cluster; default: local Ray in-process"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    cpus_per_task: float = typer.Option(1, help="CPUs per (model, revision) task"),
    progress: bool = typer.Option(True, help="progress bar"),
    prereg: Optional[Path] = PREREG_OPTION,
    unseal: Optional[str] = UNSEAL_OPTION,
) -> None:
    """Score public checkpoint series (Pythia or any GPT-NeoX-style suite, or ungrok runs) with the
    probes, on Ray. Runs (run:) of a seed quarantined by the prereg are refused unless unsealed."""
    from cluster.public import run_public
    from mech.public import PublicError
    from runner.analysis.verdicts import run_seeds
    from runner.world.batteries import BatteryError

    if source.startswith("run:"):  # ungrok runs are seeded: their quarantine applies
        runs = [d for m in models.split(",") for d in [Path(source[4:]) / m.strip()] if (d / "run.json").exists()]
        check_quarantine(prereg, run_seeds(runs), unseal, "public")
    fams = [f.strip() for f in families.split(",")] if families else None
    try:
        res = run_public([m.strip() for m in models.split(",")], revisions, source, battery, out,
                         address=address, num_cpus=num_cpus, cpus_per_task=cpus_per_task, families=fams,
                         progress=progress, log=console.print, bos=bos, max_unknown=max_unknown)
    except (PublicError, BatteryError) as e:
        raise UserError(str(e)) from None
    console.print(f"scored {res['scored']}, skipped {res['skipped']} (already scored), failed {len(res['failed'])}; "
                  f"{res['wall_seconds']} s; start token: "
                  f"{'as each run trained' if source.startswith('run:') else 'prepended' if bos else 'none'}. "
                  f"Runs: {', '.join(res['runs'])}")
    console.print(f"next: ungrok report {out}")
    if res["failed"]:
        raise typer.Exit(1)


