"""``ungrok plan``: what a grid costs (cells, tokens, FLOPs, GPU-hours) before any of it runs; and
the run presets ``ungrok train --preset`` starts from (``runner.grid.RUN_PRESETS``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cluster.cli_base import UserError, app, console

DEFAULT_MEASURED = Path("bench/throughput.json")  # what bench/paper_throughput.py writes by default
# ``ungrok train``'s --preset and --arm (module-level singletons, as cli_base's PREREG_OPTION)
PRESET_OPTION = typer.Option(None, help="start from a run preset: paper (the paper's model and schedule; "
                                        "docs/paper-setting.md); flags given win over it")
ARM_OPTION = typer.Option(None, help="with --preset: the preset's per-corpus settings (paper: tinystories | web; "
                                     "default: by the corpus's name)")


def preset_config(preset: Optional[str], arm: Optional[str], corpus, **sections):
    """A :class:`~runner.config.RunConfig` from the preset's sections for ``corpus`` (a
    CorpusConfig; its fields set on the command line win) and ``sections`` (the flags' own
    sections, which win over the preset's); without a preset, the sections alone."""
    from pydantic import ValidationError

    from cluster.cli_base import _validation_message
    from runner.config import RunConfig
    from runner.grid import RUN_PRESETS

    if preset is None and arm is not None:
        raise UserError("--arm needs --preset")
    try:
        base = RUN_PRESETS.get(preset).sections_for(corpus.name, arm) if preset else {}
    except (KeyError, ValueError) as e:
        raise UserError(f"--preset {preset}: {e.args[0]}") from None
    data = {k: {**base.get(k, {}), **v} if isinstance(v, dict) else v for k, v in sections.items()}
    data["corpus"] = {**base.get("corpus", {}), **corpus.model_dump(exclude_unset=True)}
    data.update({k: v for k, v in base.items() if k not in data})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(_validation_message(e)) from None


def _throughput(measured: Optional[Path], tokens_per_second: Optional[float], mfu: Optional[float],
                peak_tflops: Optional[float]):
    from runner.train.plan import ASSUMED, Throughput

    stated = [x is not None for x in (measured, tokens_per_second, mfu)]
    if sum(stated) > 1:
        raise UserError("give one of --measured, --tokens-per-second, --mfu (they price the same thing)")
    try:
        if tokens_per_second is not None:
            if tokens_per_second <= 0:
                raise ValueError("--tokens-per-second must be > 0")
            return Throughput.stated_tokens(tokens_per_second)
        if mfu is not None:
            if not 0 < mfu <= 1 or (peak_tflops is not None and peak_tflops <= 0):
                raise ValueError("--mfu must be in (0, 1] and --peak-tflops > 0")
            return Throughput.stated_mfu(mfu, peak_tflops * 1e12 if peak_tflops else ASSUMED[1])
        if measured is not None or DEFAULT_MEASURED.is_file():
            return Throughput.measured(measured or DEFAULT_MEASURED)
    except ValueError as e:
        raise UserError(str(e)) from None
    return None


def _si(x: float) -> str:
    for unit, k in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= k:
            return f"{x / k:,.2f}{unit}"
    return f"{x:,.0f}"


@app.command()
def plan(
    spec: Path = typer.Argument(..., help="grid spec TOML (e.g. examples/paper/grid.toml)"),
    measured: Optional[Path] = typer.Option(
        None, help=f"a throughput file from bench/paper_throughput.py (default: {DEFAULT_MEASURED} if present)"),
    tokens_per_second: Optional[float] = typer.Option(None, help="state the training tokens/s of one GPU"),
    mfu: Optional[float] = typer.Option(None, help="state a model-FLOPs utilisation (0..1) instead"),
    peak_tflops: Optional[float] = typer.Option(None, help="with --mfu: the GPU's peak TFLOP/s (default: H100 bf16)"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON only"),
) -> None:
    """Cells, parameters, tokens, model FLOPs (6 N D + attention) and GPU-hours of a grid, before
    spending any: nothing is built, trained or started."""
    from rich.table import Table

    from runner.grid import GridError, load_grid
    from runner.train.plan import plan_grid

    try:
        g = load_grid(spec)
    except GridError as e:
        raise UserError(str(e)) from None
    p = plan_grid(g, _throughput(measured, tokens_per_second, mfu, peak_tflops))
    if as_json:
        print(json.dumps(p.to_json(), indent=2))
        return
    t = Table(title=f"plan of {spec} (grid {g.name!r}): training only, no scoring or checkpoint time")
    for col in ("cell", "params", "tokens", "unique tokens", "FLOPs", "GPU-hours"):
        t.add_column(col, justify="left" if col == "cell" else "right")
    for c in p.cells:
        t.add_row(c.label, f"{c.params / 1e6:.2f}M", _si(c.tokens), _si(c.unique_tokens), _si(c.flops),
                  f"{c.gpu_hours:,.2f}")
    tot = p.totals
    t.add_row("[bold]total[/]", "", _si(tot["tokens"]), "", _si(tot["flops"]), f"[bold]{tot['gpu_hours']:,.2f}[/]")
    console.print(t)
    console.print(f"{int(tot['cells'])} cells, {tot['tokens']:,.0f} tokens, {tot['flops']:.3e} FLOPs, "
                  f"{tot['gpu_hours']:,.2f} GPU-hours at {p.throughput.source}", markup=False, highlight=False)
    if p.gpus_per_cell == 0:
        console.print("note: resources.num_gpus is 0: this grid runs on CPUs; the GPU-hours say what it would "
                      "cost on GPUs", markup=False, highlight=False)
