"""Verdicts under a locked pre-registration: per run, across runs, and per prediction.

Every entry point takes a :class:`runner.prereg.Locked` (so an unlocked or edited prereg has
already been refused) and labels each figure ``exploratory`` (data produced before the lock)
or ``confirmatory`` (after). Quarantined seeds are not read unless ``unseal=True``, which is
logged beside the prereg.

Per run and family: the classifier figures of :mod:`runner.summary` under the constants in force
when the run's data was produced, transience = (peak - final) / (peak - chance), and bootstrap
95% CIs over probe items (2,000 resamples, seeded by the run id) for peak, final and CM final.

Across runs: Spearman rho between support ratio and conflict final, whether the support ratio
alone separates survivors from the displaced, collapse depth per data-to-parameter budget, and
each prediction scored PASS / FAIL / VOID. VOID when no run matches, fewer runs than the
quantifier expects, or any matched run fails a required validity (control, margin instrument):
never a silent pass.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from runner.analysis.dose_response import cross_model, dose_response
from runner.analysis.prereg import OPS, Locked, Prediction, log_unseal
from runner.analysis.stats import spearman
from runner.config import RunConfig
from runner.data.support import corpus_support, pooled
from runner.store import is_run_dir, open_run_store
from runner.trajectory import Classifier, _final, figures_from_store, smooth

N_BOOT = 2000


def find_runs(path) -> list[Path]:
    """A run folder, or every run folder directly inside ``path`` (a sweep or runs/ folder); a list
    of such paths gives all their runs (e.g. a dosed sweep with the sweep of its dose-0 cells)."""
    if isinstance(path, (list, tuple)):
        runs = [r for p in path for r in find_runs(p)]
        names = [r.name for r in runs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"run {dup[0]} is in more than one of {[str(p) for p in path]}; pass each run once")
        return runs
    path = Path(path)
    if is_run_dir(path):
        return [path]
    if (path / "runs").is_dir():  # a sweep folder
        path = path / "runs"
    runs = sorted(p for p in path.iterdir() if is_run_dir(p)) if path.is_dir() else []
    if not runs:
        raise ValueError(f"{path} holds no runs (folders with run.json); pass a run, a runs folder or a sweep")
    return runs


def bootstrap_ci(steps, correct: np.ndarray, diff: np.ndarray, k: Classifier, seed: int,
                 n_boot: int = N_BOOT) -> dict:
    """95% percentile CIs for peak, final (conflict accuracy) and CM final, resampling items.

    ``correct``/``diff``: (step, item) arrays for the heldout conflict items.
    """
    rng = np.random.default_rng(seed)
    keep = steps >= k.start_step
    correct, diff = correct[keep].astype(float), diff[keep]
    n_items = correct.shape[1]
    counts = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=n_boot)  # (boot, item)
    acc = counts @ correct.T / n_items  # (boot, step)
    cm = counts @ diff.T / n_items
    peaks = np.array([smooth(a, k.window).max() for a in acc])
    finals = np.array([_final(a, k)[0] for a in acc])
    cm_finals = np.array([_final(c, k)[0] for c in cm])
    q = lambda x: [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]  # noqa: E731
    return {"peak_ci": q(peaks), "final_ci": q(finals), "cm_final_ci": q(cm_finals), "n_boot": n_boot}


def run_identity(run_dir: Path) -> dict:
    """corpus, budget, seed, dose (and kind) of a run: from its RunConfig, or, for a scored public
    checkpoint series, from ``run.json``'s ``identity`` (corpus = the model's name)."""
    meta = json.loads((run_dir / "run.json").read_text())
    if "identity" in meta:
        return {**meta["identity"], "n_params": meta.get("n_params")}
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    return {"kind": "trained", "corpus": cfg.corpus.name, "budget": cfg.train.budget, "seed": cfg.train.seed,
            "dose": cfg.dose, "window": cfg.intervention.window if cfg.dose != "none" else "",
            "n_params": meta.get("n_params")}


def run_verdict(run_dir: Path, locked: Locked, unseal: bool = False) -> dict:
    ident = run_identity(run_dir)
    store = open_run_store(run_dir)
    produced = store.attrs.get("first_scored_utc")
    base = {"run": run_dir.name, **ident, "first_scored_utc": produced, "complete": bool(store.attrs.get("complete"))}
    if ident["seed"] in locked.prereg.quarantined_seeds and not unseal:
        return {**base, "sealed": True, "families": {}}
    k = locked.classifier_at(produced)
    out = {**base, "sealed": False, "status": locked.status(produced), "classifier": asdict(k), "families": {}}
    seed = int(hashlib.sha256(run_dir.name.encode()).hexdigest()[:8], 16)
    for fam in store.families():
        steps = store.series(f"{fam}/step")
        cond, split = store.item_labels(fam, "condition"), store.item_labels(fam, "split")
        m = (cond == "conflict") & (split == "heldout")
        diff = store.series(f"{fam}/logp_correct")[:, m] - store.series(f"{fam}/logp_distractor")[:, m]
        f = figures_from_store(store, fam, k)
        if "peak" in f:
            chance = 0.5
            f["transience"] = (f["peak"] - f["final"]) / (f["peak"] - chance) if f["peak"] > chance else None
            f.update(bootstrap_ci(steps, diff > 0, diff, k, seed))
        out["families"][fam] = f
    return out


def support_ratio(run_dir: Path, family: str) -> dict | None:
    """Pooled support ratios (over cue classes) of the stream a run trained on: the intervened
    stream for a dosed run, else its corpus (counted once per corpus and cached)."""

    meta = json.loads((run_dir / "run.json").read_text())
    cdir = meta.get("intervened_corpus_path") or meta.get("corpus_path")
    if cdir is None or not Path(cdir).exists():  # a public checkpoint series has no corpus here
        return None
    cdir = Path(cdir)
    fams = corpus_support(cdir, [family])
    if family not in fams:
        return None
    return {mode: pooled(fams[family], mode)["ratio"] for mode in next(iter(fams[family].values()))}


def _select(run: dict, sel: dict) -> bool:
    """A selector that names no dose selects undosed runs only; one that names no window selects
    runs dosed for the whole run only (``window = "4000-end"`` selects a phase-B window)."""
    run = {"dose": "none", "window": "", **run}
    return all(str(run.get(key)) == str(val) for key, val in {"dose": "none", "window": "", **sel}.items())


def score_prediction(pred: Prediction, runs: list[dict]) -> dict:
    candidates = [r for r in runs if not r.get("sealed") and _select(r, pred.select) and pred.family in r["families"]]
    matched = [r for r in candidates if r.get("complete")]  # runs still training are not scored
    res = {"id": pred.id, "text": pred.text, "family": pred.family, "select": pred.select,
           "rule": f"{pred.quantity} {pred.op} {pred.value} in {pred.seeds} seeds", "runs": [r["run"] for r in matched]}
    if not matched:
        return {**res, "result": "VOID", "why": "no run matches the selector", "status": "exploratory"}
    need, expect = pred.needed(len(matched))
    status = "confirmatory" if all(r["status"] == "confirmatory" for r in matched) else "exploratory"
    if len(matched) < expect:
        unfinished = len(candidates) - len(matched)
        extra = f" ({unfinished} more still training)" if unfinished else ""
        return {**res, "result": "VOID", "why": f"{len(matched)} complete runs{extra}, the quantifier expects {expect}",
                "status": status}
    invalid = [f"{r['run']}: {req}" for r in matched for req in pred.requires
               if not r["families"][pred.family].get(req)]
    if invalid:
        return {**res, "result": "VOID", "why": "invalid instrument/control: " + "; ".join(invalid), "status": status}
    values = [r["families"][pred.family].get(pred.quantity) for r in matched]
    ok = [v is not None and OPS[pred.op](v, pred.value) for v in values]
    return {**res, "values": values, "successes": int(sum(ok)), "needed": need,
            "result": "PASS" if sum(ok) >= need else "FAIL", "status": status}


def across_runs(runs: list[dict], run_dirs: dict[str, Path]) -> dict:
    out: dict = {}
    fams = sorted({f for r in runs for f in r["families"]})
    for fam in fams:
        rows = []
        for r in runs:
            f = r["families"].get(fam)
            if not f or "final" not in f:
                continue
            ratio = support_ratio(run_dirs[r["run"]], fam) or {}
            rows.append({"run": r["run"], "corpus": r["corpus"], "budget": r["budget"], "seed": r["seed"],
                         "dose": r.get("dose", "none"),
                         "label": f["label"], "final": f["final"], "peak": f["peak"],
                         "support_ratio": ratio.get("windowed"), "contested_ratio": ratio.get("contested")})
        law = {}
        for key in ("support_ratio", "contested_ratio"):
            pts = [(r[key], r["final"]) for r in rows if r[key] is not None]
            if pts:
                xs, ys = zip(*pts)
                surv = [r[key] for r in rows if r["label"] == "recovered" and r[key] is not None]
                disp = [r[key] for r in rows if r["label"] == "displaced" and r[key] is not None]
                sep = bool(surv and disp and min(surv) > max(disp))
                law[key] = {"spearman_rho": spearman(xs, ys), "n": len(pts), "separates": sep,
                            "threshold": (min(surv) + max(disp)) / 2 if sep else None}
        depth = {}
        undosed = [r for r in rows if r["dose"] == "none"]
        for b in sorted({r["budget"] for r in undosed}):
            em = [r for r in undosed if r["budget"] == b]
            depth[b] = {"n": len(em), "mean_final": float(np.mean([r["final"] for r in em])),
                        "mean_depth": float(np.mean([r["peak"] - r["final"] for r in em]))}
        out[fam] = {"runs": rows, "support_law": law, "budget_effect": depth}
    return out


def verdict(path: str | Path, locked: Locked, unseal: bool = False) -> dict:
    """The whole verdict for a run or a folder of runs."""
    dirs = find_runs(path)
    if unseal:
        log_unseal(locked.path, [d.name for d in dirs])
    runs = [run_verdict(d, locked, unseal) for d in dirs]
    by_name = {d.name: d for d in dirs}
    k = locked.classifier_at(None)
    dr = dose_response(runs, lambda r, fam: support_ratio(by_name[r["run"]], fam), k)
    return {
        "prereg": {"path": locked.path, "sha256": locked.record["sha256"], "locked_utc": locked.locked_utc,
                   "git_commit": locked.record.get("git_commit"), "amendments": locked.record["amendments"]},
        "unsealed": unseal,
        # the constants applied across runs (dose-response kills / rescues, the report's across-runs
        # plots): the locked ones; each run's own labels use ``runs[i]["classifier"]``
        "classifier": asdict(k),
        "runs": runs,
        "across": across_runs([r for r in runs if not r["sealed"]], by_name),
        "dose_response": dr,
        "cross_model": cross_model([r for r in runs if not r["sealed"]]),
        "predictions": [score_prediction(p, runs) for p in locked.prereg.predictions],
        "falsifiers": [score_prediction(p, runs) for p in locked.prereg.falsifiers],
        "dose_predictions": [score_dose_prediction(p, dr, runs) for p in locked.prereg.dose_predictions],
    }


def score_dose_prediction(pred, dr: dict, runs: list[dict]) -> dict:
    """PASS / FAIL on a dose-response group's rho; VOID without the group, its baseline, or
    enough levels."""
    res = {"id": pred.id, "text": pred.text, "family": pred.family,
           "select": {"intervention": pred.intervention, "corpus": pred.corpus, "budget": pred.budget,
                      **({"window": pred.window} if pred.window else {})},
           "rule": f"{pred.quantity} {pred.op} {pred.value}"}
    g = next((g for g in dr["groups"] if (g["intervention"], g["corpus"], g["budget"], g["family"], g["window"])
              == (pred.intervention, pred.corpus, pred.budget, pred.family, pred.window)), None)
    used = [lv for lv in (g["levels"] if g else [])]
    names = {lv["dose_name"] for lv in used}
    matched = [r for r in runs if not r.get("sealed") and r.get("complete") and r["corpus"] == pred.corpus
               and r["budget"] == pred.budget and (r["dose"] == "none" and "none" in names
                                                   or r["dose"] in names and r.get("window", "") == pred.window)]
    status = "confirmatory" if matched and all(r["status"] == "confirmatory" for r in matched) else "exploratory"
    if g is None or not g["has_baseline"]:
        return {**res, "result": "VOID", "why": "no dose-0 baseline and dosed runs for this group", "status": status}
    if len(used) < pred.min_levels:
        return {**res, "result": "VOID", "why": f"{len(used)} dose levels, {pred.min_levels} needed", "status": status}
    v = g[pred.quantity]
    if v is None:
        return {**res, "result": "VOID", "why": "rho undefined (constant values)", "status": status}
    return {**res, "values": [v], "result": "PASS" if OPS[pred.op](v, pred.value) else "FAIL", "status": status}
