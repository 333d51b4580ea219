"""Classify trajectories from anywhere: another trainer's logs, a W&B export, the paper's golden file.

Input: JSON lines, one trajectory per line (blank lines are skipped)::

    {"steps": [0, 50, 100, ...], "conflict": [...], "agree": [...], "cm": [...], "run": "my-run-7"}

``steps`` are whole numbers, strictly increasing; ``conflict`` and ``agree`` are heldout
forced-choice accuracies, one per step; ``cm`` (the contrast margin in nats, one per step) is
optional (null or absent: the CM figures are null). Every other field is passed through unchanged.

Each trajectory goes through :func:`runner.trajectory.family_figures`, the same function
``ungrok show`` and ``ungrok verdict`` apply to a stored run, under one :class:`Classifier` (the
paper's frozen code by default). Output: one JSON line per trajectory, in input order: the
passed-through fields, then ``line`` (its line number in the input) and :data:`FIGURES`. A
passed-through field whose name is one of those is renamed ``input_<name>``.

Every line is checked before anything is classified; a malformed one raises
:class:`ClassifyError` naming the line and the field, and no output file is written (the output
is written atomically, whole or not at all).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from runner._io import write_text_atomic
from runner.trajectory import Classifier, family_figures

SERIES = ("steps", "conflict", "agree", "cm")
REQUIRED = ("steps", "conflict", "agree")
# The paper's seven figures (classifier_golden.md), then the peak and its step.
FIGURES = ("label", "control_valid", "conflict_final", "cm_valid", "cm_final", "cm_cross", "onset", "peak",
           "peak_step")
EXAMPLE = '{"steps": [0, 50, ...], "conflict": [...], "agree": [...], "cm": [...]}'


class ClassifyError(ValueError):
    """A trajectory line that cannot be classified; the message names the line and the field."""


def _numbers(rec: dict, name: str, where: str) -> list[float]:
    v = rec[name]
    if not isinstance(v, list) or not v:
        raise ClassifyError(f"{where}: field {name!r} must be a non-empty list of numbers, got {type(v).__name__}")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ClassifyError(f"{where}: field {name!r}, value {i} is {x!r}; every value must be a finite number")
    return [float(x) for x in v]


def check_record(rec: object, where: str) -> dict:
    """``rec`` as a trajectory (``steps`` as ints, series as float lists, ``cm`` None if absent)
    plus its other fields under ``"extra"``; :class:`ClassifyError` if any field is malformed."""
    if not isinstance(rec, dict):
        raise ClassifyError(f"{where}: expected one JSON object per line like {EXAMPLE}, got {type(rec).__name__}")
    missing = [name for name in REQUIRED if name not in rec]
    if missing:
        raise ClassifyError(f"{where}: field {missing[0]!r} is missing; a trajectory needs steps, conflict and "
                            "agree (cm optional)")
    out = {name: _numbers(rec, name, where) for name in SERIES if rec.get(name) is not None}
    if any(not s.is_integer() for s in out["steps"]):
        raise ClassifyError(f"{where}: field 'steps' must hold whole numbers (checkpoint steps)")
    steps = [int(s) for s in out["steps"]]
    bad = next((i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]), None)
    if bad is not None:
        raise ClassifyError(f"{where}: field 'steps' must increase strictly; value {bad} ({steps[bad]}) follows "
                            f"{steps[bad - 1]}")
    for name in SERIES[1:]:
        if name in out and len(out[name]) != len(steps):
            raise ClassifyError(f"{where}: field {name!r} has {len(out[name])} values but 'steps' has "
                                f"{len(steps)}; give one value per step")
    return {"steps": steps, "conflict": out["conflict"], "agree": out["agree"], "cm": out.get("cm"),
            "extra": {key: v for key, v in rec.items() if key not in SERIES}}


def read_trajectories(path: str | Path) -> list[tuple[int, dict]]:
    """``[(line number, checked trajectory)]`` of a JSON-lines file; every line is checked first."""
    path = Path(path)
    if not path.is_file():
        raise ClassifyError(f"{path}: no such file; pass a JSON-lines file of trajectories ({EXAMPLE})")
    out = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ClassifyError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one "
                                f"trajectory object like {EXAMPLE}") from None
        out.append((n, check_record(rec, where)))
    if not out:
        raise ClassifyError(f"{path}: no trajectories (the file is empty); one JSON object per line: {EXAMPLE}")
    return out


def classify_record(line: int, traj: dict, k: Classifier = Classifier()) -> dict:
    """One output line: the passed-through fields, ``line`` and :data:`FIGURES` of ``traj``."""
    cm = None if traj["cm"] is None else np.asarray(traj["cm"])
    f = family_figures(np.asarray(traj["steps"]), np.asarray(traj["conflict"]), np.asarray(traj["agree"]), cm, k)
    taken = {"line", *FIGURES}
    extra = {(f"input_{key}" if key in taken else key): v for key, v in traj["extra"].items()}
    return {**extra, "line": line, **{name: f.get(name) for name in FIGURES}}


def classify_file(path: str | Path, out: str | Path | None = None, k: Classifier = Classifier()) -> list[dict]:
    """Classify every trajectory of ``path`` (checked first) and, when ``out`` is given, write the
    figures there as JSON lines (atomically). Returns the output lines."""
    rows = [classify_record(n, traj, k) for n, traj in read_trajectories(path)]
    if out is not None:
        write_text_atomic(Path(out), "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def default_out(path: str | Path) -> Path:
    """``runs.jsonl`` -> ``runs.figures.jsonl`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem if path.suffix == '.jsonl' else path.name}.figures.jsonl")
