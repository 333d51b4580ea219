"""Pre-registration: thresholds and predictions fixed, in code-enforced form, before the data.

A prereg is a TOML file::

    [classifier]            # runner.summary.Classifier fields (the paper's constants by default)
    displaced = 0.6
    [quarantine]
    seeds = [1042, 1043, 1044]
    [[predictions]]
    id = "P1"
    text = "pronoun_gender is displaced on web/packed"
    family = "pronoun_gender"
    select = { corpus = "web", budget = "packed" }
    quantity = "final"      # any per-family figure: final, peak, transience, cm_final, cross_lag, ...
    op = "<="
    value = 0.6
    seeds = "2/3"           # at least 2 of 3 selected runs (runs are seeds of the cell)
    [[falsifiers]]          # same shape; a PASS here counts against the hypothesis

``lock`` writes ``<file>.lock.json``: the sha256 of the normalised text (line endings and trailing
whitespace normalised; every other character counts), the UTC time, the ungrok version and the git
commit. Any later edit makes :func:`load_locked` - which every evaluator calls - refuse. Changes
are dated amendments appended to the lock, each hashed into a chain (``hash = sha256(prev_hash +
amendment)``); an amendment applies to data produced after it ("going forward") only.
Unsealing quarantined seeds is appended to ``<file>.unseal.jsonl``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runner import __version__
from runner._io import utcnow, write_json_atomic
from runner.config import load_toml_model
from runner.trajectory import Classifier

OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
       ">": lambda a, b: a > b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


class PreregError(ValueError):
    """The prereg is malformed, unlocked, edited after locking, or its chain is broken."""


def _t(iso: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(iso)


class Prediction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str = ""
    family: str
    select: dict[str, str | int | float] = Field(default_factory=dict)
    quantity: str
    op: Literal["<=", "<", ">=", ">", "==", "!="]
    value: float | str | bool
    seeds: str = "all"
    requires: tuple[str, ...] = ("control_valid", "margin_valid")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: str) -> str:
        if v == "all":
            return v
        try:
            k, n = (int(x) for x in v.split("/"))
        except ValueError:
            raise ValueError(f"seeds must be 'k/n' (e.g. '2/3') or 'all', got {v!r}") from None
        if not 0 < k <= n:
            raise ValueError(f"seeds {v!r}: need 0 < k <= n")
        return v

    def needed(self, n_runs: int) -> tuple[int, int]:
        """(successes needed, runs expected)."""
        if self.seeds == "all":
            return n_runs, n_runs
        k, n = (int(x) for x in self.seeds.split("/"))
        return k, n


class DosePrediction(BaseModel):
    """A claim about a dose-response group (see :mod:`runner.dose_response`): e.g. Spearman
    rho(kill rate, seed-mean CM final) < 0 for pronoun_gender on stories/packed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str = ""
    family: str
    intervention: str
    corpus: str
    budget: str = "packed"
    window: str = Field("", description='the intervention window, e.g. "4000-end"; "" = the whole run')
    quantity: Literal["rho_cm_final", "rho_final"]
    op: Literal["<=", "<", ">=", ">"]
    value: float
    min_levels: int = Field(3, ge=3, description="dose levels, baseline included, needed for a verdict")


class Prereg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = ""
    classifier: dict[str, float | int] = Field(default_factory=dict)
    quarantine: dict[str, list[int]] = Field(default_factory=dict)
    predictions: tuple[Prediction, ...] = ()
    falsifiers: tuple[Prediction, ...] = ()
    dose_predictions: tuple[DosePrediction, ...] = ()

    @field_validator("classifier")
    @classmethod
    def _known_constants(cls, v: dict) -> dict:
        names = {f.name for f in fields(Classifier)}
        for k in v:
            if k not in names:
                raise ValueError(f"unknown classifier constant {k!r}; known: {sorted(names)}")
        return v

    @property
    def quarantined_seeds(self) -> set[int]:
        return set(self.quarantine.get("seeds", []))


def normalize(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(l.rstrip() for l in lines).strip("\n") + "\n"


def sha256_text(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def parse(path: str | Path) -> Prereg:
    return load_toml_model(path, Prereg, PreregError, "prereg file")


def lock_path(path: str | Path) -> Path:
    return Path(str(path) + ".lock.json")


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def lock(path: str | Path) -> dict:
    """Lock the prereg: refuse if already locked (amend instead)."""
    path = Path(path)
    parse(path)  # a malformed prereg cannot be locked
    lp = lock_path(path)
    if lp.exists():
        raise PreregError(f"{path} is already locked ({lp}); change it with `ungrok prereg amend {path}`")
    rec = {
        "file": path.name,
        "sha256": sha256_text(path.read_text()),
        "locked_utc": utcnow(),
        "ungrok_version": __version__,
        "git_commit": _git_commit(path.resolve().parent),
        "amendments": [],
    }
    write_json_atomic(lp, rec)
    return rec


def _amendment_hash(prev: str, body: dict) -> str:
    return hashlib.sha256((prev + json.dumps(body, sort_keys=True)).encode()).hexdigest()


def verify(path: str | Path) -> dict:
    """The lock record, after checking the file's hash and the amendment chain."""
    path = Path(path)
    lp = lock_path(path)
    if not lp.exists():
        raise PreregError(f"{path} is not locked; run `ungrok prereg lock {path}` before reading any data")
    rec = json.loads(lp.read_text())
    now = sha256_text(path.read_text())
    if now != rec["sha256"]:
        raise PreregError(
            f"{path} was edited after it was locked (sha256 {now[:12]} != locked {rec['sha256'][:12]}); "
            f"revert the edit and record the change with `ungrok prereg amend {path} --set KEY=VALUE --reason ...`"
        )
    prev = rec["sha256"]
    for i, a in enumerate(rec["amendments"]):
        body = {k: v for k, v in a.items() if k != "hash"}
        if a.get("prev") != prev or _amendment_hash(prev, body) != a.get("hash"):
            raise PreregError(f"{lp}: amendment {i + 1} does not chain (edited lock file?); "
                              "restore it from version control")
        prev = a["hash"]
    return rec


def amend(path: str | Path, changes: dict[str, Any], reason: str) -> dict:
    """Append a dated amendment (``classifier.<constant>`` changes) to the lock's hash chain."""
    if not reason.strip():
        raise PreregError("an amendment needs a --reason")
    rec = verify(path)
    for key, val in changes.items():
        section, _, name = key.partition(".")
        if section != "classifier" or name not in {f.name for f in fields(Classifier)}:
            raise PreregError(f"amendment key {key!r}: only classifier.<constant> can be amended, "
                              "e.g. classifier.displaced=0.55")
        if not isinstance(val, (int, float)):
            raise PreregError(f"amendment {key}: value must be a number, got {val!r}")
    prev = rec["amendments"][-1]["hash"] if rec["amendments"] else rec["sha256"]
    body = {"n": len(rec["amendments"]) + 1, "utc": utcnow(), "changes": changes, "reason": reason, "prev": prev}
    rec["amendments"].append({**body, "hash": _amendment_hash(prev, body)})
    write_json_atomic(lock_path(path), rec)
    return rec


class Locked(BaseModel):
    """A verified prereg with its lock record; what evaluators receive."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    prereg: Prereg
    record: dict

    @property
    def locked_utc(self) -> str:
        return self.record["locked_utc"]

    def classifier_at(self, produced_utc: str | None) -> Classifier:
        """Constants in force for data first produced at ``produced_utc``: the locked values plus
        every amendment dated before it (amendments apply going forward only)."""
        k = replace(Classifier(), **self.prereg.classifier)
        for a in self.record["amendments"]:
            if produced_utc is not None and _t(a["utc"]) <= _t(produced_utc):
                k = replace(k, **{key.split(".", 1)[1]: v for key, v in a["changes"].items()})
        return k

    def status(self, produced_utc: str | None) -> str:
        """``confirmatory`` for data produced after the lock, ``exploratory`` before (or unknown)."""
        return "confirmatory" if produced_utc is not None and _t(produced_utc) > _t(self.locked_utc) else "exploratory"


def unregistered() -> Locked:
    """No prereg: the paper's default constants, and every figure exploratory."""
    return Locked(path="", prereg=Prereg(), record={"sha256": None, "locked_utc": "9999-12-31T00:00:00+00:00",
                                                    "git_commit": None, "amendments": []})


def load_locked(path: str | Path) -> Locked:
    """Every evaluator's entry point: parse + verify, or refuse."""
    rec = verify(path)
    return Locked(path=str(path), prereg=parse(path), record=rec)


def log_unseal(path: str | Path, runs: list[str]) -> None:
    """Append an unseal record (who, when, which runs) beside the prereg."""
    log = Path(str(path) + ".unseal.jsonl")
    with open(log, "a") as f:
        f.write(json.dumps({"utc": utcnow(), "user": os.environ.get("USER", "?"), "runs": runs}) + "\n")

