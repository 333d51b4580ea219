"""The agree control of a dosed run: the paper's control, over the agree items the edit leaves alone;
and the classifier on each cue class alone (:func:`class_figures`, descriptive).

The paper's agree items are those where rule and prior coincide (masculine cue -> *he*; a
consonant-initial word -> *a*); its kill flips the rule's answers of one class only (girl-name
cues: *she* -> *he*), so it never touches them, and the paper reports agree controls >= 0.94
under kill. The built-in batteries' agree items test *every* class (the in-context copy agrees
with the rule after a feminine cue too, ``Mary cried because she ... Anna cried because`` ->
*she*), so a feminine-only kill hits half of them, and the pooled control of a ``kill:1.0`` run
fails although the construction is intact.

Under the paper's class-conditional ``kill`` (``kill:p``, ``kill:ratio=r``) the control of each
dosed family is therefore computed over its heldout agree items whose cue class the edit does not
target (the item's class is the class whose rule answer begins its correct continuation; the
items are regenerated from the run's config and matched by item id). The figures the classifier
reads (``agree_final``, ``agree_max``, ``control_valid``) are replaced by that subset's; the
pooled ones stay beside them (``agree_final_all``, ``control_valid_all``) with ``control_items``
naming the subset. Undosed runs, other doses (rescue, the contested edits, which touch every
class) and families the dose does not edit keep the pooled control unchanged. Computed from the
stored per-item log-probabilities at analysis time: no stored figure changes.
"""

from __future__ import annotations

import numpy as np

from runner.config import RunConfig
from runner.doses import parse_dose_key
from runner.scoring import battery_for
from runner.trajectory import Classifier, family_figures
from runner.world.rules import RULES
from runner.world.targets import targets_of

CLASS_CONDITIONAL = ("kill",)  # doses that edit the targeted classes only


def untouched_classes(cfg: RunConfig, family: str) -> tuple[str, ...] | None:
    """The cue classes of ``family`` a run's dose leaves alone, or None when the pooled control
    applies (undosed, not a class-conditional dose, a family the dose does not edit or that has no
    registered classes)."""
    name, _, _ = parse_dose_key(cfg.dose)
    if name not in CLASS_CONDITIONAL or family not in cfg.dose_families or family not in RULES:
        return None
    fam = RULES.get(family)
    hit = set(targets_of(fam, cfg.intervention.classes))
    rest = tuple(c for c in sorted(fam.cue_classes) if c not in hit)
    return rest or None


_CLASSES: dict[tuple[str, str, str], dict[str, str]] = {}


def item_classes(cfg: RunConfig, family: str, condition: str = "agree") -> dict[str, str]:
    """item id -> cue class, for ``family``'s ``condition`` items of the run's battery. The battery
    is regenerated from ``cfg.probes`` once per process (a verdict over a sweep asks for the same
    one for every run; ~0.1 s each)."""
    key = (cfg.probes.model_dump_json(), family, condition)
    if key not in _CLASSES:
        answers = {a: c for c, a in RULES.get(family).rule_answer.items()}
        out = {}
        for it in battery_for(cfg):
            if it.family == family and it.condition == condition:
                cls = answers.get(it.correct.split()[0]) if it.correct.split() else None
                if cls is not None:
                    out[it.item_id] = cls
        _CLASSES[key] = out
    return dict(_CLASSES[key])


def logp_diff(store, family: str) -> np.ndarray:
    """The family's stored log p(correct) - log p(distractor), (eval, item): read once by a
    verdict and handed to :func:`untouched_control` and :func:`class_figures`."""
    return store.series(f"{family}/logp_correct") - store.series(f"{family}/logp_distractor")


def untouched_control(store, cfg: RunConfig, family: str, figures: dict, k: Classifier,
                      diff: np.ndarray | None = None) -> dict:
    """``figures`` with the control recomputed over the untouched agree items (see the module
    docstring), or unchanged when the pooled control applies or no such item is stored
    (``diff``: :func:`logp_diff`, when the caller has it)."""
    keep = untouched_classes(cfg, family)
    if keep is None or "agree_final" not in figures:
        return figures
    ids = store.item_labels(family, "item")
    cls = item_classes(cfg, family)
    cond, split = store.item_labels(family, "condition"), store.item_labels(family, "split")
    m = (cond == "agree") & (split == "heldout") & np.isin(np.array([cls.get(i, "") for i in ids]), keep)
    if not m.any():
        return figures
    steps = store.series(f"{family}/step")
    d = (logp_diff(store, family) if diff is None else diff)[:, m]
    sub = family_figures(steps, store.series(f"{family}/acc_conflict_heldout"), (d > 0).mean(1), None, k)
    return {**figures, "agree_final_all": figures["agree_final"], "agree_max_all": figures.get("agree_max"),
            "control_valid_all": figures["control_valid"], "agree_final": sub["agree_final"],
            "agree_max": sub["agree_max"], "control_valid": sub["control_valid"],
            "control_items": f"agree items of untargeted classes {list(keep)} ({int(m.sum())} heldout)"}


def class_series(store, cfg: RunConfig, family: str,
                 diff: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per cue class, (heldout conflict accuracy, CM) at every eval over that class's heldout
    conflict items (the class whose rule answer begins the item's correct continuation; items
    regenerated from the run's config); None for a family with fewer than two registered classes
    among its items, or a battery file not found. ``diff``: :func:`logp_diff`, when the caller has it."""
    if family not in RULES:
        return None
    try:
        cls = item_classes(cfg, family, "conflict")
    except (OSError, ValueError):  # the run's battery file is not where it was (an archived run)
        return None
    ids = store.item_labels(family, "item")
    cond, split = store.item_labels(family, "condition"), store.item_labels(family, "split")
    labels = np.array([cls.get(i, "") for i in ids])
    base = (cond == "conflict") & (split == "heldout")
    present = sorted(str(c) for c in set(labels[base]) if c)
    if len(present) < 2:
        return None
    d = logp_diff(store, family) if diff is None else diff
    return {c: ((d[:, base & (labels == c)] > 0).mean(1), d[:, base & (labels == c)].mean(1)) for c in present}


CLASS_KEYS = ("label", "final", "peak", "onset", "cm_cross", "cross_lag", "cm_final")


def class_figures(store, cfg: RunConfig, family: str, k: Classifier,
                  diff: np.ndarray | None = None) -> dict[str, dict] | None:
    """Descriptive, in no prediction: the classifier run on each cue class on its own.

    The built-in batteries' conflict items test every class (a feminine cue against the copy
    *he*, a masculine cue against *she*); a run that lost the rule in one class and kept it in
    the other has a pooled final near 0.5, its pooled onset at the last step and its pooled CM
    crossing wherever the two classes' margins net out (measured in ``web``: docs/world.md). Per
    class (:func:`class_series`): :func:`runner.trajectory.family_figures` of that class's
    conflict accuracy and CM (agree: the family's pooled heldout agree accuracy), keeping
    ``CLASS_KEYS``. None where :func:`class_series` is None (``diff`` as there)."""
    series = class_series(store, cfg, family, diff)
    if series is None:
        return None
    steps, agree = store.series(f"{family}/step"), store.series(f"{family}/acc_agree_heldout")
    out = {}
    for c, (acc, cm) in series.items():
        f = family_figures(steps, acc, agree, cm, k)
        out[c] = {key: f.get(key) for key in CLASS_KEYS}
    return out
