"""Localization across checkpoints: which components carry the competitor when the rule is displaced.

Method (per run and rule family, on the heldout conflict probes, at every checkpoint):

1. direct logit attribution of every head, MLP, embedding and bias term to
   ``LD = logit(rule) - logit(competitor)`` at the prediction position
   (:func:`mech.attribution.direct_logit_attribution`; the terms sum to LD);
2. activation patching between each conflict item and its twin whose earlier answer (the
   competitor's evidence) is switched to the rule's, per head and per layer
   (:func:`mech.attribution.patch_evidence`);
3. attention from the prediction position to the cue and to the competitor's evidence;
4. the embedding-level scalar cos(class-mean cue embedding difference, rule-answer unembedding
   difference).

Ranking. The run's CM trajectory (``runner.trajectory.figures_from_store``) gives the
smoothed CM peak and the CM zero-crossing (``cm_cross``, the last step whose smoothed CM >= 0; the
split is the checkpoint after it). Each component's *competitor contribution* is ``-DLA`` (mean
over items); its growth is the mean over the post window (``step >= split``) minus the mean over
the pre window (``peak <= step < split``). The table
ranks components by growth and gives, per component, the step where its smoothed competitor
contribution first reaches the midpoint of its pre and post levels (``cross_step``) and where it
turns from favouring the rule to favouring the competitor for good (``sign_step``). A run with no
CM crossing is split at its smoothed CM peak (``split.reason`` says which).

Ablation check. At the last checkpoint the top-ranked heads (growth > 0) are zero- and
mean-ablated (``hook_z`` at every position) and the project's CM (summed continuation
log-probs, ``runner.scoring``) on heldout conflict items is measured before and after, with the
same number of lowest-ranked heads ablated as a control and the agree-item margin as a check
that the rule itself survives.

Output: ``<out_dir>/mech/localize.json`` (merged per family) and PNG heatmaps, see
:mod:`mech.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from runner._progress import track
from runner.model import load_model
from runner.scoring import encode_battery
from runner.store import open_run_store
from runner.trajectory import UNGROK_0_1, Classifier, figures_from_store, smooth, smoothed

from .attribution import (
    ablation_hooks,
    attention_to_cue_and_evidence,
    direct_logit_attribution,
    embedding_alignment,
    head_label,
    margins_under,
    mean_z,
    patch_evidence,
)
from .capture import checkpoint_steps, torch_threads
from .probes import encode_probes, matched_pairs, run_context
from .runtime import merge_family_results


def _store_trajectory(run_dir: Path, family: str, k: Classifier) -> tuple[dict, dict[int, float]]:
    """(summary figures, {step: CM}) from the run's store; empty if it has no scores."""

    try:
        st = open_run_store(run_dir)
        steps, cm = st.series(f"{family}/step"), st.series(f"{family}/cm")
        return figures_from_store(st, family, k), {int(s): float(c) for s, c in zip(steps, cm)}
    except (FileNotFoundError, KeyError):
        return {}, {}


def choose_split(steps: list[int], cm: np.ndarray, figures: dict, k: Classifier = Classifier()) -> dict:
    """Pre/post windows around the CM crossing (or the CM peak when there is none): the post
    window starts at the first step after the last step with smoothed CM >= 0 (``cm_cross``).

    ``cm`` is aligned with ``steps`` (NaN where unknown). Returns ``{"step", "reason",
    "peak_step", "pre": [...], "post": [...]}``."""
    s = np.asarray(steps)
    peak = figures.get("peak_step")
    cross = figures.get("cm_cross")
    if peak is None:
        ok = np.isfinite(cm) & (s >= k.start_step)
        if ok.any():
            sm = smoothed(np.where(ok, cm, 0.0), k)
            peak = int(s[ok][np.argmax(sm[ok])])
        else:
            peak = int(s[0])
    if cross is not None and k.operators == UNGROK_0_1 and s.min() < cross <= s.max():
        split, reason = int(cross), "cm_cross"  # ungrok-0.1: the first step of the negative stretch
    elif cross is not None and s.min() <= cross < s.max():
        # the paper's cm_cross is the last step with smoothed CM >= 0: split at the step after it
        split, reason = int(s[np.searchsorted(s, cross, "right")]), "cm_cross"
    else:
        split, reason = int(s[min(int(np.searchsorted(s, peak, "right")), len(s) - 1)]), "cm_peak (no CM crossing)"
    pre = [int(x) for x in s if peak <= x < split]
    if len(pre) < 3:
        pre = [int(x) for x in s[s < split][-3:]]
    post = [int(x) for x in s if x >= split]
    return {"step": split, "reason": reason, "peak_step": int(peak), "pre": pre, "post": post}


def _crossings(steps: list[int], series: np.ndarray, pre: float, post: float, from_step: int,
               window: int = 3) -> tuple[int | None, int | None]:
    """(midpoint step, sign step) of a competitor-contribution series (see module docstring)."""
    s = np.asarray(steps)
    sm = smooth(series, window, centred=False)  # trailing: a step is never moved before the change
    start = int(np.searchsorted(s, from_step))
    mid_step = None
    if post > pre:
        mid = (pre + post) / 2
        hit = np.nonzero(sm[start:] >= mid)[0]
        mid_step = int(s[start + hit[0]]) if len(hit) else None
    sign_step = None
    pos = sm > 0
    for i in range(max(start, 1), len(s)):
        if pos[i] and not pos[i - 1] and pos[i:].all():
            sign_step = int(s[i])
            break
    return mid_step, sign_step


def rank_components(steps: list[int], labels: list[str], competitor: np.ndarray, split: dict,
                    extra: dict[str, dict[str, np.ndarray]] | None = None) -> list[dict]:
    """The ranked table: one row per component, by growth of its competitor contribution.

    ``competitor`` is (component, step) = -DLA. ``extra`` maps a component label to further
    per-step series (patching effect, attention) summarised as pre/post means in its row."""
    s = np.asarray(steps)
    pre_m, post_m = np.isin(s, split["pre"]), np.isin(s, split["post"])
    rows = []
    for i, lab in enumerate(labels):
        x = competitor[i]
        pre, post = float(x[pre_m].mean()), float(x[post_m].mean())
        mid, sign = _crossings(steps, x, pre, post, split["peak_step"])
        kind = "head" if lab[0] == "L" and "H" in lab and "." not in lab else (
            "mlp" if lab.startswith("MLP") else "other")
        row = {"component": lab, "kind": kind, "competitor_pre": pre, "competitor_post": post,
               "growth": post - pre, "cross_step": mid, "sign_step": sign,
               "dla_final": float(-x[-1])}
        for name, series in (extra or {}).get(lab, {}).items():
            row[f"{name}_pre"] = float(np.nanmean(series[pre_m]))
            row[f"{name}_post"] = float(np.nanmean(series[post_m]))
        if "patch_pre" in row:  # the competitor's total effect through this component, growing
            row["patch_growth"] = -(row["patch_post"] - row["patch_pre"])
        rows.append(row)
    rows.sort(key=lambda r: -r["growth"])
    for r, row in enumerate(rows, 1):
        row["rank"] = r
    return rows


def ablation_check(run_dir: str | Path, family: str, head_sets: dict[str, list[tuple[int, int]]],
                   step: int | None = None, items=None) -> dict:
    """CM on heldout conflict items at ``step`` (default: last checkpoint) before and after zero
    and mean ablation of each named set of (layer, head) pairs (``hook_z`` at every position).

    Returns ``{"step", "before": margins, "sets": {name: {"heads", "zero", "mean",
    "cm_restored_zero", "cm_restored_mean"}}}``; margins are
    :func:`mech.attribution.margins_under` dicts (``cm``, ``acc_conflict``, ``agree_margin``...)."""
    ctx = run_context(run_dir, items)
    step = checkpoint_steps(run_dir)[-1] if step is None else step
    model = load_model(run_dir, step)
    its = [it for it in ctx.items if it.family == family]
    enc = encode_battery(its, ctx.tokenizer, ctx.bos_id, ctx.cfg.model.n_ctx, pad_id=ctx.pad_id)
    probes = encode_probes(its, ctx.tokenizer, ctx.bos_id, ctx.cfg.model.n_ctx, ctx.pad_id)
    means = mean_z(model, probes)
    before = margins_under(model, enc, its, [])
    sets = {}
    for name, heads in head_sets.items():
        if not heads:
            continue
        entry: dict = {"heads": [head_label(*h) for h in heads]}
        for mode in ("zero", "mean"):
            entry[mode] = margins_under(model, enc, its, ablation_hooks(heads, mode, means))
            entry[f"cm_restored_{mode}"] = entry[mode]["cm"] - before["cm"]
        sets[name] = entry
    return {"step": int(step), "before": before, "sets": sets}


def _parse_head(label: str) -> tuple[int, int]:
    layer, head = label[1:].split("H")
    return int(layer), int(head)


def _measure_steps(run_dir: Path, family: str, steps: list[int], probes, conflict, switched, tokenizer,
                   batch_size: int, log: Callable[[str], None] | None) -> dict[str, list]:
    """Load each checkpoint once and take every per-step measurement on it: direct logit
    attribution on the conflict probes, activation patching of the evidence (conflict vs
    switched pairs), attention to cue and evidence, and the embedding alignment."""
    m: dict[str, list] = {k: [] for k in ("labels", "dla", "ld", "ld_switched", "emb", "heads", "attn_out",
                                          "mlp_out", "attn_cue", "attn_ev")}
    for step in track(steps, f"localize {family}", unit="checkpoints", log=log, every=1,
                      info=lambda s: f"step {s} LD {m['ld'][-1]:+.3f}"):
        model = load_model(run_dir, step)
        labels, contrib, ld = direct_logit_attribution(model, probes, batch_size)
        m["labels"] = labels
        m["dla"].append(contrib.mean(0))
        m["ld"].append(float(ld.mean()))
        p = patch_evidence(model, conflict, switched)
        m["heads"].append(p["heads"])
        m["attn_out"].append(p["attn_out"])
        m["mlp_out"].append(p["mlp_out"])
        m["ld_switched"].append(p["ld_switched"])
        c, e = attention_to_cue_and_evidence(model, probes, batch_size)
        m["attn_cue"].append(c)
        m["attn_ev"].append(e)
        m["emb"].append(embedding_alignment(model, family, tokenizer))
    return m


def _choose_heads(table: list[dict], top_k: int):
    """The heads the ablation check removes: the ``top_k`` with the largest positive DLA growth,
    the ``top_k`` carrying the competitor's evidence after the split (most negative patching
    effect), and as control as many of the lowest-growth heads not in the first set."""
    top = [_parse_head(r["component"]) for r in table if r["kind"] == "head" and r["growth"] > 0][:top_k]
    ranked_heads = [r for r in table if r["kind"] == "head"]
    control = [_parse_head(r["component"]) for r in ranked_heads[::-1] if _parse_head(r["component"]) not in top]
    by_patch = sorted(ranked_heads, key=lambda r: r.get("patch_post", 0.0))
    patch_top = [_parse_head(r["component"]) for r in by_patch if r.get("patch_post", 0.0) < 0][:top_k]
    return top, patch_top, control


def localize_family(run_dir: str | Path, family: str, steps: list[int] | None = None, *, split: str = "heldout",
                    top_k: int = 2, batch_size: int = 64, items=None, log: Callable[[str], None] | None = None
                    ) -> dict:
    """All measurements for one family across ``steps`` (default: every checkpoint), the ranked
    table and the ablation check; plain JSON-able dict (per-step arrays as lists)."""
    run_dir = Path(run_dir)
    ctx = run_context(run_dir, items)
    its = [it for it in ctx.items if it.family == family]
    if not its:
        raise ValueError(f"{run_dir}: no probe items of family {family!r} (families: {ctx.families})")
    n_ctx = ctx.cfg.model.n_ctx
    probes = encode_probes(its, ctx.tokenizer, ctx.bos_id, n_ctx, ctx.pad_id).where("conflict", split)
    conflict, switched = matched_pairs(its, ctx.tokenizer, ctx.bos_id, n_ctx, ctx.pad_id, split=split)
    steps = checkpoint_steps(run_dir) if steps is None else sorted(set(int(s) for s in steps))
    k = Classifier()
    figures, store_cm = _store_trajectory(run_dir, family, k)
    m = _measure_steps(run_dir, family, steps, probes, conflict, switched, ctx.tokenizer, batch_size, log)
    labels, lds, ld_sw, emb = m["labels"], m["ld"], m["ld_switched"], m["emb"]
    dla, heads, attn_out, mlp_out, a_cue, a_ev = (m[name] for name in ("dla", "heads", "attn_out",
                                                                        "mlp_out", "attn_cue", "attn_ev"))
    dla_a = np.stack(dla, 1)                 # (component, step), rule-favouring sign
    heads_a = np.stack(heads, -1)            # (layer, head, step)
    cue_a, ev_a = np.stack(a_cue, -1), np.stack(a_ev, -1)
    cm = np.array([store_cm.get(s, np.nan) for s in steps])
    sp = choose_split(steps, cm if np.isfinite(cm).any() else np.array(lds), figures, k)
    extra: dict[str, dict[str, np.ndarray]] = {}
    L, H = heads_a.shape[:2]
    for layer in range(L):
        for h in range(H):
            extra[head_label(layer, h)] = {"patch": heads_a[layer, h], "attn_cue": cue_a[layer, h],
                                           "attn_evidence": ev_a[layer, h]}
        extra[f"MLP{layer}"] = {"patch": np.stack(mlp_out, -1)[layer]}
    table = rank_components(steps, labels, -dla_a, sp, extra)
    top, patch_top, control = _choose_heads(table, top_k)
    ablation = ablation_check(run_dir, family, {"dla_growth": top, "patching": patch_top,
                                                "control_lowest_growth": control[: max(len(top), 1)]},
                              step=steps[-1], items=items)
    return {
        "family": family, "split_items": split, "n_items": probes.n, "n_pairs": conflict.n,
        "steps": steps, "cm_store": [None if not np.isfinite(x) else float(x) for x in cm],
        "ld_conflict": lds, "ld_switched": ld_sw, "embedding_cos": emb,
        "figures": figures, "split": sp, "components": labels, "dla": dla_a.tolist(),
        "patch_heads": heads_a.tolist(), "patch_attn_out": np.stack(attn_out, -1).tolist(),
        "patch_mlp_out": np.stack(mlp_out, -1).tolist(), "attn_cue": cue_a.tolist(),
        "attn_evidence": ev_a.tolist(), "table": table, "top_heads": [head_label(*h) for h in top],
        "ablation": ablation,
    }


def localize_run(run_dir: str | Path, family: str | list[str] | None = None, steps: list[int] | None = None, *,
                 out_dir: str | Path | None = None, split: str = "heldout", top_k: int = 2, batch_size: int = 64,
                 threads: int | None = 1, plots: bool = True, items=None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Localize the competitor in a run, per rule family, across checkpoints.

    ``family``: one family, a list, or None (every family of the run's battery). ``steps``:
    checkpoints (default all). ``out_dir``: where ``mech/localize.json`` and the PNGs go (default
    the run folder; pass another folder to keep a run read-only). ``top_k``: heads ablated in the
    check. Returns ``{"run_id", "families": {family: result}, "json": path, "html": path,
    "png": [paths]}``; an existing ``localize.json`` keeps the entries of other families.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    ctx = run_context(run_dir, items)
    fams = ctx.families if family is None else ([family] if isinstance(family, str) else list(family))
    with torch_threads(threads), torch.no_grad():
        results = {f: localize_family(run_dir, f, steps, split=split, top_k=top_k, batch_size=batch_size,
                                      items=items, log=log)
                   for f in track(fams, f"localize {ctx.cfg.run_id}", unit="families", log=log, every=1)}
    path, doc = merge_family_results(out_dir, "localize.json", ctx.cfg.run_id, results)
    mdir = path.parent
    out = {"run_id": ctx.cfg.run_id, "families": results, "json": str(path), "html": None, "png": []}
    if plots:
        from .plots import write_plots

        assets = write_plots(doc, mdir)
        out["html"], out["png"] = assets["html"], assets["png"]
    return out


def summary_lines(result: dict, n: int = 6) -> list[str]:
    """A short text table of one family's result (for a CLI)."""
    sp = result["split"]
    lines = [f"{result['family']}: split at step {sp['step']} ({sp['reason']}), peak {sp['peak_step']}; "
             f"{result['n_items']} conflict items, {result['n_pairs']} matched pairs",
             f"{'rank':>4} {'component':<10} {'pre':>7} {'post':>7} {'growth':>7} {'cross':>6} {'sign':>6} "
             f"{'patch_post':>10} {'attn_ev_post':>12}"]
    for r in result["table"][:n]:
        lines.append(f"{r['rank']:>4} {r['component']:<10} {r['competitor_pre']:>7.3f} {r['competitor_post']:>7.3f} "
                     f"{r['growth']:>7.3f} {str(r['cross_step']):>6} {str(r['sign_step']):>6} "
                     f"{r.get('patch_post', float('nan')):>10.3f} {r.get('attn_evidence_post', float('nan')):>12.3f}")
    ab = result["ablation"]
    b = ab["before"]
    lines.append(f"ablation at step {ab['step']}: CM before {b['cm']:+.3f} (conflict acc {b['acc_conflict']:.3f}, "
                 f"agree margin {b['agree_margin']:+.3f})")
    for name, e in ab["sets"].items():
        for mode in ("zero", "mean"):
            m = e[mode]
            lines.append(f"  {name} {e['heads']} {mode}: CM {m['cm']:+.3f} (restored {e[f'cm_restored_{mode}']:+.3f}), "
                         f"conflict acc {m['acc_conflict']:.3f}, agree margin {m['agree_margin']:+.3f}")
    return lines
