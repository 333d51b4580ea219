"""What a prereg may name, checked when it is locked or amended (never when it is read back).

A prediction scores ``figures[family][quantity]`` of the runs its selector picks; a name the
verdict code does not know never matches, so a falsifier with ``quantity = "fianl"`` would score
FAIL ``[None]`` forever and could never fire. :func:`check_names` refuses, naming the key and the
valid names: an unknown quantity (the figures of :func:`runner.trajectory.family_figures` and
those the verdict adds), selector key, dose (an intervention the dose registry lacks), ``label``
value, gate in ``requires``, or budget; and a family name that looks like a typo of a known rule
family (a family only a battery of your own defines is not known here, so other names pass).
"""

from __future__ import annotations

import difflib

import numpy as np

from runner.config import TrainConfig
from runner.doses import DOSES, parse_dose
from runner.trajectory import INCOMPLETE, LABELS, family_figures
from runner.world.rules import RULES

SELECT_KEYS = ("corpus", "budget", "seed", "dose", "window", "kind", "run")  # what runner.analysis.verdicts sets
VERDICT_FIGURES = ("transience", "peak_ci", "final_ci", "cm_final_ci", "n_boot")


def known_quantities() -> list[str]:
    """Every per-family figure a verdict computes (the classifier's and the verdict's own)."""
    steps = np.arange(0, 2000, 100)
    up = np.clip(steps / 600, 0, 1)
    figs = family_figures(steps, up, up, up - 0.5)
    return sorted({*figs, *VERDICT_FIGURES})


def known_families() -> list[str]:
    import runner.world.rvp  # noqa: F401  (registers the paper battery's rule-versus-prior families)

    return sorted(RULES.names())


def _refuse(where: str, key: str, value, valid) -> ValueError:
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{where}: {key} {value!r} is unknown{hint}; valid: {', '.join(map(str, valid))}")


def _family(where: str, family: str, families: list[str]) -> None:
    if family not in families and difflib.get_close_matches(family, families, n=1, cutoff=0.8):
        raise _refuse(where, "family", family, families)


def _dose(where: str, dose: str) -> None:
    try:
        parse_dose(dose)
    except ValueError as e:
        raise ValueError(f"{where}: select.dose: {e}") from None


def check_prediction(pred, where: str, quantities: list[str], families: list[str]) -> None:
    """One prediction or falsifier (``where`` names it, e.g. ``falsifiers[0] (F1)``)."""
    if pred.quantity not in quantities:
        raise _refuse(where, "quantity", pred.quantity, quantities)
    for key, val in pred.select.items():
        if key not in SELECT_KEYS:
            raise _refuse(where, "select key", key, SELECT_KEYS)
        if key == "dose":
            _dose(where, str(val))
        if key == "budget":
            try:
                TrainConfig(budget=str(val))
            except ValueError:
                raise ValueError(f"{where}: select.budget {val!r} is not valid; use 'packed' or 'dn<ratio>' "
                                 "(e.g. dn5)") from None
    for gate in pred.requires or ():
        if gate not in quantities:
            raise _refuse(where, "requires", gate, [q for q in quantities if q.endswith("_valid")])
    if pred.quantity == "label" and pred.value not in (*LABELS, INCOMPLETE):
        raise _refuse(where, "label value", pred.value, (*LABELS, INCOMPLETE))
    _family(where, pred.family, families)


def check_names(prereg, where: object = "prereg", error: type[Exception] = ValueError) -> None:
    """Every prediction, falsifier, dose prediction and the intervention gate of ``prereg`` (a
    :class:`runner.analysis.prereg.Prereg` or ``Additions``); ``error("<where>: ...")`` naming
    the first bad key and the valid names."""
    try:
        _check_names(prereg)
    except ValueError as e:
        raise error(f"{where}: {e}") from None


def _check_names(prereg) -> None:
    quantities, families = known_quantities(), known_families()
    for kind in ("predictions", "falsifiers"):
        for i, pred in enumerate(getattr(prereg, kind, ())):
            check_prediction(pred, f"{kind}[{i}] ({pred.id})", quantities, families)
    interventions = [n for n in DOSES.names() if n != "none"]
    for i, dp in enumerate(getattr(prereg, "dose_predictions", ())):
        where = f"dose_predictions[{i}] ({dp.id})"
        if dp.intervention not in interventions:
            raise _refuse(where, "intervention", dp.intervention, interventions)
        _family(where, dp.family, families)
    gate = getattr(prereg, "intervention_gate", None)
    for fam in gate.families if gate is not None else ():
        _family("intervention_gate", fam, families)
