"""Read, don't recompute: a family's activations at the decision site from the run's zarr capture,
or (when the capture lacks them) captured on request or recomputed from the weights.

Every analysis of :mod:`mech.appendix` that needs only rows at the decision site (the logit-gap
decomposition, head attribution, cue decodability, the fitted cue direction) asks
:func:`family_rows` for the kinds it needs. ``source``:

- ``"auto"`` (default): the published capture (``<group>/mech/<family>``) when it holds every
  kind needed, at the precision needed (the residual writers in float32, see
  :data:`mech.names.FLOAT32_KINDS`), for every requested step and item at the same decision site;
  otherwise, with ``capture_missing=True``, capture what is missing into the run's group first
  (kinds and steps joined with what is there, one new capture replacing the old); otherwise
  recompute in memory from the weights (nothing written);
- ``"capture"``: the capture or an error that says how to make it;
- ``"weights"``: always recompute (what the capture saves; ``bench/mech_appendix.py`` times both).

``FamilyRows.source`` says which one was used. Analyses that must run the model (ablation,
patching, projection, OV read-out at the cue) say so in their results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr

from runner.model import load_model

from . import names as N
from .capture import available_kinds, capture_location, capture_probes, capture_run, checkpoint_steps
from .probes import ProbeTensors, encode_probes, run_context
from .runtime import load_weights

SOURCES = ("auto", "capture", "weights")


@dataclass
class FamilyRows:
    """A family's rows: ``arrays[kind]`` is ``(step, item, *dims(kind)[2:])`` float32, aligned with
    ``steps`` and ``probes.items``; ``source`` is ``"capture"`` or ``"weights"``."""

    family: str
    steps: list[int]
    probes: ProbeTensors
    arrays: dict[str, np.ndarray]
    source: str

    def at(self, step: int) -> dict[str, np.ndarray]:
        i = self.steps.index(int(step))
        return {k: v[i] for k, v in self.arrays.items()}


def _published(run_dir: Path, family: str, store, group) -> Any:
    path, g = capture_location(run_dir, family, store, group)
    if not (path / g / "zarr.json").exists():
        return None
    return zarr.open_group(str(path), mode="r", use_consolidated=False)[g]


def _missing(g: Any, kinds: tuple[str, ...], steps: list[int], probes: ProbeTensors) -> list[str]:
    """Why the capture group ``g`` cannot serve (empty: it can)."""
    if g is None:
        return ["no capture"]
    why = [f"kind {k}" for k in kinds if N.hook_name(k) not in g]
    why += [f"{k} stored as float16" for k in kinds if k in N.FLOAT32_KINDS and N.hook_name(k) in g
            and g[N.hook_name(k)].dtype != np.float32]
    have = set(int(s) for s in g["step"][:])
    if not set(steps) <= have:
        why.append(f"steps {sorted(set(steps) - have)[:5]}")
    ids = list(g["item"][:])
    pos = dict(zip(ids, range(len(ids))))
    want = [it.item_id for it in probes.items]
    if not all(i in pos for i in want):
        why.append("items")
    elif not np.array_equal(g["pred_pos"][:][[pos[i] for i in want]], probes.pred_pos.numpy()):
        why.append("decision site (captured before multi-token answers moved it)")
    return why


def _read(g: Any, kinds: tuple[str, ...], steps: list[int], probes: ProbeTensors) -> dict[str, np.ndarray]:
    all_steps = [int(s) for s in g["step"][:]]
    si = [all_steps.index(s) for s in steps]
    ids = list(g["item"][:])
    pos = dict(zip(ids, range(len(ids))))
    ii = np.array([pos[it.item_id] for it in probes.items])
    out = {}
    for k in kinds:
        a = g[N.hook_name(k)]
        rows = a[slice(min(si), max(si) + 1)] if si == list(range(min(si), max(si) + 1)) else a.oindex[si]
        out[k] = np.asarray(rows, dtype=np.float32)[:, ii]
    return out


def recompute(run_dir: str | Path, probes: ProbeTensors, kinds: tuple[str, ...], steps: list[int],
              batch_size: int = 64) -> dict[str, np.ndarray]:
    """The same rows as a capture, computed in memory from each checkpoint's weights."""
    model = load_model(run_dir, steps[0])
    kinds = available_kinds(model, tuple(dict.fromkeys(kinds)))
    per: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for s in steps:
        load_weights(model, run_dir, s)
        got = capture_probes(model, probes, kinds, batch_size)
        for k in kinds:
            per[k].append(got[k])
    return {k: np.stack(v) for k, v in per.items()}


def family_rows(run_dir: str | Path, family: str, kinds: tuple[str, ...], steps: list[int] | None = None, *,
                source: str = "auto", capture_missing: bool = False, store=None, group=None, batch_size: int = 64,
                items=None, log: Callable[[str], None] | None = None) -> FamilyRows:
    """``kinds`` of ``family`` at ``steps`` (default: every checkpoint), read from the capture when
    it can serve them (see the module docstring). Kinds whose hook the model lacks (a rotary
    model has no ``hook_pos_embed``) are dropped."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    run_dir = Path(run_dir)
    ctx = run_context(run_dir, items)
    its = [it for it in ctx.items if it.family == family]
    if not its:
        raise ValueError(f"{run_dir}: no probe items of family {family!r} (families: {ctx.families})")
    probes = encode_probes(its, ctx.tokenizer, ctx.bos_id, ctx.cfg.model.n_ctx, ctx.pad_id)
    steps = checkpoint_steps(run_dir) if steps is None else sorted(set(int(s) for s in steps))
    kinds = available_kinds(load_model(run_dir, steps[0]), tuple(dict.fromkeys(kinds)))
    if source == "weights":
        return FamilyRows(family, steps, probes, recompute(run_dir, probes, kinds, steps, batch_size), "weights")
    g = _published(run_dir, family, store, group)
    why = _missing(g, kinds, steps, probes)
    if why and capture_missing:
        have = [] if g is None else [k for k in g.attrs.get("kinds", []) if k in N.kinds()]
        old_steps = [] if g is None else [int(s) for s in g["step"][:]]
        if log:
            log(f"{family}: capturing ({', '.join(why)} missing)")
        capture_run(run_dir, sorted(set(steps) | set(old_steps)), families=[family], batch_size=batch_size,
                    names_filter=list(dict.fromkeys([*have, *kinds])), store=store, group=group, items=items)
        g = _published(run_dir, family, store, group)
        why = _missing(g, kinds, steps, probes)
    if not why:
        return FamilyRows(family, steps, probes, _read(g, kinds, steps, probes), "capture")
    if log and source == "auto":
        log(f"{family}: the capture cannot serve ({', '.join(why)}); recomputing from the weights")
    if source == "capture":
        raise FileNotFoundError(f"{run_dir}: the capture of {family!r} cannot serve this analysis ({', '.join(why)}); "
                                f"capture it (ungrok mech capture {run_dir}) or pass --capture")
    return FamilyRows(family, steps, probes, recompute(run_dir, probes, kinds, steps, batch_size), "weights")
