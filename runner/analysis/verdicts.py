"""Verdicts under a locked pre-registration: per run, across runs, and per prediction.

Every entry point takes a :class:`runner.prereg.Locked` (so an unlocked or edited prereg has
already been refused) and labels each figure ``exploratory`` (data produced before the lock)
or ``confirmatory`` (after). :func:`verdict` refuses runs of quarantined seeds unless given an
unseal reason, which is logged in the prereg's unseal chain (:mod:`runner.analysis.quarantine`).

Per run and family: the classifier figures of :mod:`runner.summary` under the constants in force
when the run's data was produced, transience = (peak - final) / (peak - chance), and bootstrap
95% CIs over probe items (2,000 resamples, seeded by the run id) for peak, final and CM final.
Under the paper's class-conditional kill, a dosed family's agree control reads only the agree
items of the classes the kill leaves alone (:mod:`runner.analysis.agree_control`).

Across runs: Spearman rho between support ratio and conflict final, whether the support ratio
alone separates survivors from the displaced, collapse depth per data-to-parameter budget, and
each prediction scored PASS / FAIL / VOID. The support ratio of the law is the per-class ratio of
the cue class(es) the family's heldout conflict probes test (pooled over those classes when they
test several; :func:`tested_classes`). VOID when no run matches, fewer runs than the quantifier
expects, the prediction was added by an amendment after the data was first scored, or a gate
fails (:mod:`runner.analysis.gates`: the control, the margin instrument - which voids only margin
predictions, scored on the instrument-valid seeds when at least 2 are - or the intervention
gate): never a silent pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from runner._io import field_error, read_json
from runner.analysis.agree_control import class_figures, logp_diff, untouched_control
from runner.analysis.dose_response import cross_model, dose_response
from runner.analysis.gates import intervention_cells
from runner.analysis.prereg import Locked
from runner.analysis.quarantine import refuse_quarantined
from runner.analysis.scoreboard import score_dose_prediction, score_prediction, scoreboard  # noqa: F401 (re-exported)
from runner.analysis.stats import spearman
from runner.config import RunConfig
from runner.data.support import corpus_support, pooled
from runner.scoring import battery_for
from runner.store import is_run_dir, open_run_store
from runner.trajectory import DISPLACED, RECOVERED, Classifier, cm_final_of, figures_from_store, final_of, smoothed
from runner.world.rules import RULES

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
    correct = correct[keep].astype(float)  # accuracy from start_step; CM over all evals (the classifier's)
    n_items = correct.shape[1]
    counts = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=n_boot)  # (boot, item)
    acc = counts @ correct.T / n_items  # (boot, step)
    cm = counts @ diff.T / n_items
    peaks = smoothed(acc, k).max(axis=1)  # each resample's series at once (figures as one by one)
    finals = final_of(acc, k)
    cm_finals = cm_final_of(steps, cm, k)
    q = lambda x: [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]  # noqa: E731
    return {"peak_ci": q(peaks), "final_ci": q(finals), "cm_final_ci": q(cm_finals), "n_boot": n_boot}


def run_identity(run_dir: Path) -> dict:
    """corpus, budget, seed, dose (and kind) of a run: from its RunConfig, or, for a scored public
    checkpoint series, from ``run.json``'s ``identity`` (corpus = the model's name)."""
    meta = read_json(run_dir / "run.json")
    if "identity" in meta:
        return {**meta["identity"], "n_params": meta.get("n_params")}
    try:
        cfg = RunConfig.model_validate(read_json(run_dir / "config.json"))
    except ValidationError as e:
        raise ValueError(f"{run_dir / 'config.json'}: {field_error(e)}; the file is damaged or from another "
                         "version: restore it, or move the run out of the folder") from None
    return {"kind": "trained", "corpus": cfg.corpus.name, "budget": cfg.train.budget, "seed": cfg.train.seed,
            "dose": cfg.dose, "window": cfg.intervention.window if cfg.dose != "none" else "",
            "n_params": meta.get("n_params")}


def _config(run_dir: Path) -> RunConfig | None:
    """A trained run's config (None for a public checkpoint series: it has none)."""
    p = run_dir / "config.json"
    return RunConfig.model_validate(read_json(p)) if p.exists() else None


def run_seeds(run_dirs) -> dict[str, int | None]:
    """``{run name: seed}`` of run folders, from their config (or identity), never their data:
    what :func:`runner.analysis.quarantine.refuse_quarantined` needs."""
    return {Path(d).name: run_identity(Path(d)).get("seed") for d in run_dirs}


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
    cfg = _config(run_dir) if ident.get("kind") == "trained" else None  # a public series' config is not a RunConfig
    for fam in store.families():
        steps = store.series(f"{fam}/step")
        cond, split = store.item_labels(fam, "condition"), store.item_labels(fam, "split")
        m = (cond == "conflict") & (split == "heldout")
        every = logp_diff(store, fam)  # (eval, item), read once for every figure below
        diff = every[:, m]
        f = figures_from_store(store, fam, k)
        if cfg is not None and cfg.dose != "none":  # under a class-conditional kill: the agree items it leaves alone
            f = untouched_control(store, cfg, fam, f, k, every)
        if cfg is not None and "final" in f:
            f["by_class"] = class_figures(store, cfg, fam, k, every)
        if "peak" in f:
            chance = 0.5
            f["transience"] = (f["peak"] - f["final"]) / (f["peak"] - chance) if f["peak"] > chance else None
            f.update(bootstrap_ci(steps, diff > 0, diff, k, seed))
        out["families"][fam] = f
    return out


def support_ratio(run_dir: Path, family: str, classes=None) -> dict | None:
    """Support ratios per mode of the stream a run trained on (the intervened stream for a dosed
    run, else its corpus; counted once per corpus and cached), pooled over ``classes`` (default:
    every cue class)."""
    meta = json.loads((run_dir / "run.json").read_text())
    cdir = meta.get("intervened_corpus_path") or meta.get("corpus_path")
    if cdir is None or not Path(cdir).exists():  # a public checkpoint series has no corpus here
        return None
    fams = corpus_support(Path(cdir), [family])
    if family not in fams:
        return None
    counts = {c: v for c, v in fams[family].items() if classes is None or c in classes}
    if not counts:
        return None
    return {mode: pooled(counts, mode)["ratio"] for mode in next(iter(counts.values()))}


_TESTED: dict[tuple[str, str], tuple[str, ...]] = {}


def tested_classes(cfg: RunConfig, family: str) -> tuple[str, ...] | None:
    """The cue classes a run's heldout conflict probes of ``family`` test: the classes whose rule
    answer is some conflict item's correct answer (a battery may test one class only, as the
    reference battery's pronoun items test feminine cues; the built-in batteries test every
    class). None for a family without cue classes in ``runner.world.rules.RULES``."""
    if family not in RULES:
        return None
    key = (cfg.probes.model_dump_json(), family)
    if key not in _TESTED:
        try:
            items = battery_for(cfg)
        except (ValueError, OSError):
            return None
        answers = {it.correct.strip() for it in items
                   if it.family == family and it.condition == "conflict" and it.split == "heldout"}
        _TESTED[key] = tuple(c for c, a in RULES.get(family).rule_answer.items() if a in answers)
    return _TESTED[key] or None


def tested_support(run_dir: Path, family: str) -> dict | None:
    """:func:`support_ratio` over the cue classes the run's conflict probes test
    (:func:`tested_classes`), with ``classes``: the support law's ratio."""
    cfg_file = run_dir / "config.json"
    if not cfg_file.exists() or "identity" in json.loads((run_dir / "run.json").read_text()):
        return None  # a public checkpoint series: no RunConfig, no corpus here
    classes = tested_classes(RunConfig.model_validate_json(cfg_file.read_text()), family)
    ratio = support_ratio(run_dir, family, classes) if classes else None
    return {**ratio, "classes": list(classes or ())} if ratio else None


def across_runs(runs: list[dict], run_dirs: dict[str, Path]) -> dict:
    out: dict = {}
    fams = sorted({f for r in runs for f in r["families"]})
    for fam in fams:
        rows = []
        for r in runs:
            f = r["families"].get(fam)
            if not f or "final" not in f:
                continue
            ratio = tested_support(run_dirs[r["run"]], fam) or {}
            rows.append({"run": r["run"], "corpus": r["corpus"], "budget": r["budget"], "seed": r["seed"],
                         "dose": r.get("dose", "none"),
                         "label": f["label"], "final": f["final"], "peak": f["peak"],
                         "support_ratio": ratio.get("windowed"), "contested_ratio": ratio.get("contested"),
                         "support_classes": ratio.get("classes")})
        law = {}
        for key in ("support_ratio", "contested_ratio"):
            pts = [(r[key], r["final"]) for r in rows if r[key] is not None]
            if pts:
                xs, ys = zip(*pts)
                surv = [r[key] for r in rows if r["label"] == RECOVERED and r[key] is not None]
                disp = [r[key] for r in rows if r["label"] == DISPLACED and r[key] is not None]
                sep = bool(surv and disp and min(surv) > max(disp))
                law[key] = {"spearman_rho": spearman(xs, ys), "n": len(pts), "separates": sep,
                            "threshold": (min(surv) + max(disp)) / 2 if sep else None,
                            "classes": sorted({c for r in rows if r[key] is not None for c in r["support_classes"]})}
        depth = {}
        undosed = [r for r in rows if r["dose"] == "none"]
        for b in sorted({r["budget"] for r in undosed}):
            em = [r for r in undosed if r["budget"] == b]
            depth[b] = {"n": len(em), "mean_final": float(np.mean([r["final"] for r in em])),
                        "mean_depth": float(np.mean([r["peak"] - r["final"] for r in em]))}
        out[fam] = {"runs": rows, "support_law": law, "budget_effect": depth}
    return out


def verdict(path: str | Path | Sequence[str | Path], locked: Locked, unseal: str | None = None,
            command: str = "verdict") -> dict:
    """The whole verdict for a run or a folder of runs.

    Runs of quarantined seeds are refused unless ``unseal`` (the reason) is given, which appends a
    record naming ``command`` to the prereg's unseal log (:func:`refuse_quarantined`)."""
    dirs = find_runs(path)
    unsealed = refuse_quarantined(locked, run_seeds(dirs), unseal, command)
    runs = [run_verdict(d, locked, unsealed is not None) for d in dirs]
    by_name = {d.name: d for d in dirs}
    k = locked.classifier_at(None)
    cells = intervention_cells(runs, locked.prereg.intervention_gate)  # INTERVENTION-INVALID levels: no verdict
    dr = dose_response(runs, lambda r, fam: support_ratio(by_name[r["run"]], fam), k, cells)
    return {
        "prereg": {"path": locked.path, "sha256": locked.record["sha256"], "locked_utc": locked.locked_utc,
                   "git_commit": locked.record.get("git_commit"), "amendments": locked.record["amendments"],
                   "unseals": [*locked.unseals, *([unsealed] if unsealed else [])]},
        "unsealed": unsealed,
        # the constants applied across runs (dose-response kills / rescues, the report's across-runs
        # plots): the locked ones; each run's own labels use ``runs[i]["classifier"]``
        "classifier": asdict(k),
        "runs": runs,
        "across": across_runs([r for r in runs if not r["sealed"]], by_name),
        "dose_response": dr,
        "cross_model": cross_model([r for r in runs if not r["sealed"]]),
        # predictions, falsifiers, dose_predictions (locked and amended) and the intervention gate
        **scoreboard(locked, runs, dr),
    }

