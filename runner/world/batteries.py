"""Probe batteries: forced-choice items in the reference JSONL schema.

Schema (one JSON object a line, as in ``shared/reference/batteries/rvp4.jsonl``):
``family, condition, probe, split, template_id, prefix, correct, distractor, chance, item_id``
(extra fields such as ``category`` are kept). ``condition`` is ``conflict`` (rule and competitor
disagree: the diagnostic), ``agree`` (they coincide: the control) or ``neutral`` (no cue: the
prior-pull prompts, whose ``correct`` is the competitor's answer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from runner._io import atomic_path

CONDITIONS = ("conflict", "agree", "neutral")
SPLITS = ("train", "heldout")


class BatteryError(ValueError):
    """A battery file or item is malformed; the message names the line and the field."""


class ProbeItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    family: str
    condition: str
    probe: str
    split: str
    template_id: str
    prefix: str
    correct: str
    distractor: str
    chance: float = 0.5
    item_id: str

    @field_validator("condition")
    @classmethod
    def _condition(cls, v: str) -> str:
        if v not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {v!r}")
        return v

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        if v not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {v!r}")
        return v

    @field_validator("correct", "distractor", "prefix")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty string")
        return v


def write_battery(items: Iterable[ProbeItem], path: str | Path) -> Path:
    """Write items as JSONL atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for it in items:
            f.write(json.dumps(it.model_dump(), sort_keys=False) + "\n")
    return Path(path)


def read_battery(path: str | Path) -> list[ProbeItem]:
    """Read a JSONL battery; a malformed line raises BatteryError naming the line and field."""
    path = Path(path)
    if path.is_dir():
        raise BatteryError(f"battery {str(path)!r} is a folder, not a file; pass the battery's JSONL file")
    if not path.is_file():
        raise BatteryError(f"battery file {str(path)!r} does not exist; pass a JSONL file path")
    items: list[ProbeItem] = []
    seen: set[str] = set()
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BatteryError(f"{path}:{lineno}: not valid JSON ({e.msg}); one object a line") from None
            if not isinstance(obj, dict):
                raise BatteryError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            try:
                item = ProbeItem(**obj)
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(x) for x in err["loc"]) or "(item)"
                raise BatteryError(
                    f"{path}:{lineno}: field {field!r}: {err['msg']}; fields required: "
                    "family, condition, probe, split, template_id, prefix, correct, distractor, item_id"
                ) from None
            if item.item_id in seen:
                raise BatteryError(f"{path}:{lineno}: duplicate item_id {item.item_id!r}; ids must be unique")
            seen.add(item.item_id)
            items.append(item)
    if not items:
        raise BatteryError(f"battery file {str(path)!r} holds no items")
    return items


def check_cells(items: list[ProbeItem], where: str) -> None:
    """Every family a run trains with needs heldout ``conflict`` items (the diagnostic) and heldout
    ``agree`` items (the control): the classifier reads both; without them a run would train to
    the end and then have no figures (checked by ``runner.train.prepare_run``)."""
    have = {(it.family, it.condition) for it in items if it.split == "heldout"}
    for fam in dict.fromkeys(it.family for it in items):
        for cond in ("conflict", "agree"):
            if (fam, cond) not in have:
                raise BatteryError(f"{where}: family {fam!r} has no heldout {cond} items; the classifier reads "
                                   "heldout conflict (the diagnostic) and heldout agree (the control) accuracy: "
                                   "add them, or leave the family out")


def select(items: Iterable[ProbeItem], *, family: str | None = None, condition: str | None = None,
           split: str | None = None) -> list[ProbeItem]:
    return [
        it for it in items
        if (family is None or it.family == family)
        and (condition is None or it.condition == condition)
        and (split is None or it.split == split)
    ]
