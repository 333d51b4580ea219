"""The paper's mechanism measures (appendix I) for a run, per rule family, from its zarr capture.

Measures (each its own module; the exact definitions are in their docstrings and docs/mech.md):

- ``decompose``  direct vs contextual decomposition of the rule-prior logit gap per checkpoint,
  per layer and per head (:mod:`mech.decompose`; read from the capture);
- ``carrier``    the top head's share of total |head attribution| at the CM peak and the final
  checkpoint (capture), its zero-ablation and OV alignment (model runs) (:mod:`mech.effects`);
- ``decode``     cue-class decodability after each block per checkpoint (:mod:`mech.decode`; capture);
- ``crosspatch`` same-run patching between the CM peak and the final checkpoint, both ways, and
  the asymmetry table (:mod:`mech.crosspatch`; model runs);
- ``direction``  direction specificity at the CM peak and the final checkpoint per depth
  (direction fitted from the capture, projection run on the model) (:mod:`mech.effects`);
- ``bootstrap``  the template-stratified paired bootstrap of the peak-to-final drop (store).

The CM peak is the checkpoint with the largest smoothed store CM (the registered classifier's
smoothing, steps >= its start step); the final checkpoint is the last one. Results:
``<out_dir>/mech/appendix.json`` (merged per family) and PNGs (:mod:`mech.appendix_report`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from runner._progress import track
from runner.model import load_model
from runner.scoring import encode_battery
from runner.store import open_run_store
from runner.trajectory import Classifier, smoothed

from .capture import checkpoint_steps
from .crosspatch import asymmetry, cross_patch
from .decode import class_direction, decodability_series, depth_stack
from .decompose import DECOMPOSE_KINDS, decompose_series, head_share, readout
from .effects import carrier_ablation, conflict_battery, direction_specificity, ov_alignment
from .positions import cue_class
from .probes import run_context
from .runtime import load_weights, merge_family_results, torch_threads
from .source import FamilyRows, family_rows
from .uncertainty import drop_from_store

MEASURES = ("decompose", "carrier", "decode", "crosspatch", "direction", "bootstrap")
ROW_KINDS = tuple(dict.fromkeys((*DECOMPOSE_KINDS, "resid_pre", "resid_post")))


def peak_and_final(run_dir: str | Path, family: str, steps: list[int], k: Classifier = Classifier()) -> dict:
    """``{"peak", "final", "cm_peak_smoothed"}``: the checkpoint with the largest smoothed store CM
    (steps >= ``k.start_step`` when any) and the last checkpoint."""
    st = open_run_store(run_dir)
    s, c = np.asarray(st.series(f"{family}/step")), np.asarray(st.series(f"{family}/cm"), float)
    sm = smoothed(c, k)
    ok = np.isin(s, steps) & (s >= k.start_step)
    ok = ok if ok.any() else np.isin(s, steps)
    if not ok.any():
        raise ValueError(f"{run_dir}: no scored step of {family!r} has a checkpoint")
    i = int(np.nonzero(ok)[0][np.argmax(sm[ok])])
    return {"peak": int(s[i]), "final": int(steps[-1]), "cm_peak_smoothed": float(sm[i])}


def readouts(run_dir: str | Path, steps: list[int]) -> dict:
    """:class:`mech.decompose.Readout` of every checkpoint (one model, weights loaded per step)."""
    model = load_model(run_dir, steps[0])
    out = {}
    for s in steps:
        load_weights(model, run_dir, s)
        out[s] = readout(model)
    return out


def _item_fields(rows: FamilyRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    its = rows.probes.items
    labels = np.array([cue_class(it) or "" for it in its])
    frames = np.array([it.split for it in its])
    conflict = np.array([it.condition == "conflict" and it.split == "heldout" for it in its])
    return labels, frames, conflict


def _carrier(dec: dict, steps: list[int], pf: dict, models: dict, battery, rows: FamilyRows, labels) -> dict:
    out = {}
    conflict = [i for i, it in enumerate(rows.probes.items) if it.condition == "conflict"]
    probes = rows.probes.subset(conflict)
    for name in ("peak", "final"):
        step = pf[name]
        heads = np.asarray(dec["heads"][steps.index(step)])
        head, share = head_share(heads)
        out[name] = {"step": step, "top_head": f"L{head[0]}H{head[1]}", "share": share,
                     "attribution": float(heads[head]), "layer_attn": float(dec["attn"][steps.index(step)][head[0]]),
                     "ablation": carrier_ablation(models[name], battery, head),
                     "ov_alignment": ov_alignment(models[name], probes, head, labels[conflict])}
    out["share_series"] = [head_share(np.asarray(h))[1] for h in dec["heads"]]
    return out


def _directions(rows: FamilyRows, step: int, labels: np.ndarray) -> dict[int, np.ndarray]:
    keep = labels != ""
    classes = sorted(set(labels[keep].tolist()))
    if len(classes) != 2:  # the direction is a difference of two class means
        return {}
    X = depth_stack(rows.at(step))[:, keep]
    return {d: class_direction(X[d], labels[keep], classes) for d in range(X.shape[0])}


def _timed(timing: dict, name: str, fn: Callable, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    timing[name] = time.perf_counter() - t0
    return out


def analyse_family(run_dir: str | Path, family: str, measures: tuple[str, ...] = MEASURES, *, source: str = "auto",
                   capture_missing: bool = False, store=None, group=None, items=None,
                   log: Callable[[str], None] | None = None) -> dict:
    """Every requested measure for one family (plain JSON-able dict; ``timing`` in seconds)."""
    run_dir, t = Path(run_dir), {}
    steps = checkpoint_steps(run_dir)
    rows = _timed(t, "read", family_rows, run_dir, family, ROW_KINDS, steps, source=source,
                  capture_missing=capture_missing, store=store, group=group, items=items, log=log)
    labels, frames, conflict = _item_fields(rows)
    pf = peak_and_final(run_dir, family, steps)
    res: dict = {"family": family, "steps": steps, "source": rows.source, **pf, "timing": t,
                 "n_conflict_heldout": int(conflict.sum()), "classes": sorted(set(labels[labels != ""].tolist()))}
    if {"decompose", "carrier"} & set(measures):
        res["decompose"] = _timed(t, "decompose", lambda: decompose_series(rows, readouts(run_dir, steps), conflict))
    if "decode" in measures:
        res["decode"] = _timed(t, "decode", decodability_series, rows, labels, frames)
    if {"carrier", "crosspatch", "direction"} & set(measures):
        _model_measures(run_dir, family, measures, res, rows, labels, items)
    if "bootstrap" in measures:
        res["bootstrap"] = _timed(t, "bootstrap", drop_from_store, run_dir, family, pf["peak"], pf["final"])
    if log:
        log(f"{family}: {', '.join(f'{k} {v:.1f}s' for k, v in t.items())} (rows from {rows.source})")
    return res


def _model_measures(run_dir: Path, family: str, measures: tuple[str, ...], res: dict, rows: FamilyRows,
                    labels: np.ndarray, items) -> None:
    """The measures that run the model (at the CM peak and the final checkpoint), into ``res``."""
    t, steps = res["timing"], res["steps"]
    pf = {"peak": res["peak"], "final": res["final"]}
    ctx = run_context(run_dir, items)
    models = {name: load_model(run_dir, step) for name, step in pf.items()}
    if "carrier" in measures:
        res["carrier"] = _timed(t, "carrier", _carrier, res["decompose"], steps, pf, models,
                                conflict_battery(ctx, [family]), rows, labels)
    if "crosspatch" in measures:
        res["crosspatch"] = _timed(t, "crosspatch", _crosspatch, ctx, family, models)
    if "direction" in measures:
        every = conflict_battery(ctx)
        res["direction"] = _timed(t, "direction", lambda: {
            name: direction_specificity(models[name], every, family, _directions(rows, step, labels))
            for name, step in pf.items()})


def _crosspatch(ctx, family: str, models: dict) -> dict:
    its = [it for it in ctx.items if it.family == family and it.condition == "conflict" and it.split == "heldout"]
    enc = encode_battery(its, ctx.tokenizer, ctx.bos_id, ctx.cfg.model.n_ctx, pad_id=ctx.pad_id)
    fwd = cross_patch(models["peak"], models["final"], enc)
    back = cross_patch(models["final"], models["peak"], enc)
    return {"peak_into_final": fwd, "final_into_peak": back, "asymmetry": asymmetry(fwd, back)}


def appendix_run(run_dir: str | Path, family: str | list[str] | None = None, *, out_dir: str | Path | None = None,
                 measures: tuple[str, ...] = MEASURES, source: str = "auto", capture_missing: bool = False,
                 store=None, group=None, threads: int | None = 1, plots: bool = True, items=None,
                 log: Callable[[str], None] | None = None) -> dict:
    """The measures for a run, per family (default: every family of its battery). ``out_dir``:
    where ``mech/appendix.json`` and the PNGs go (default the run folder). ``source`` /
    ``capture_missing``: see :mod:`mech.source`. Returns ``{"run_id", "families", "json", "png"}``."""
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f"unknown measure(s) {sorted(unknown)}; choose from {', '.join(MEASURES)}")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    ctx = run_context(run_dir, items)
    fams = ctx.families if family is None else ([family] if isinstance(family, str) else list(family))
    with torch_threads(threads), torch.no_grad():
        results = {f: analyse_family(run_dir, f, measures, source=source, capture_missing=capture_missing,
                                     store=store, group=group, items=items, log=log)
                   for f in track(fams, f"appendix {ctx.cfg.run_id}", unit="families", log=log, every=1)}
    path, doc = merge_family_results(out_dir, "appendix.json", ctx.cfg.run_id, results)
    mdir = path.parent
    out = {"run_id": ctx.cfg.run_id, "families": results, "json": str(path), "png": []}
    if plots:
        from .appendix_report import write_plots

        out["png"] = write_plots(doc, mdir)
    return out
