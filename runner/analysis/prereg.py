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
    # requires = [...]      # gates; default: the instrument the quantity uses (runner.analysis.gates)
    [[falsifiers]]          # same shape; a PASS here counts against the hypothesis
    [intervention_gate]     # optional (default off): control families that must hold in dosed cells
    families = ["det_an_choice", "a_an_adjective", "irregular_past", "negation_bare_verb"]
    seeds = "2/3"           # a family holds if RECOVERED and control-valid in >= 2 of 3 seeds
    tolerance = 1           # failing families a cell tolerates; more -> INTERVENTION-INVALID

``lock`` writes ``<file>.lock.json``: the sha256 of the normalised text (line endings and trailing
whitespace normalised; every other character counts), the UTC time, the ungrok version and the git
commit. Any later edit makes :func:`load_locked` - which every evaluator calls - refuse. Changes
are dated amendments appended to the lock, each hashed into a chain (``hash = sha256(prev_hash +
amendment)``): a change of classifier constants applies to data produced after it ("going
forward") only; a prediction an amendment adds is scored only on data first scored after it.
Unsealing quarantined seeds (:mod:`runner.analysis.quarantine`) is appended to
``<file>.unseal.jsonl``, a second hash chain that starts at the lock's sha256 and that
:func:`verify` checks too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runner import __version__
from runner._io import utcnow, write_json_atomic
from runner.analysis.prereg_check import check_names
from runner.config import field_error, load_toml_model
from runner.trajectory import Classifier

OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
       ">": lambda a, b: a > b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


class PreregError(ValueError):
    """The prereg is malformed, unlocked, edited after locking, or its chain is broken."""


def _t(iso: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(iso)


def check_seeds(v: str) -> str:
    """A seed quantifier: ``"all"`` or ``"k/n"`` with ``0 < k <= n``."""
    if v == "all":
        return v
    try:
        k, n = (int(x) for x in v.split("/"))
    except ValueError:
        raise ValueError(f"seeds must be 'k/n' (e.g. '2/3') or 'all', got {v!r}") from None
    if not 0 < k <= n:
        raise ValueError(f"seeds {v!r}: need 0 < k <= n")
    return v


def needed(seeds: str, n_runs: int) -> tuple[int, int]:
    """(successes needed, runs expected) of a seed quantifier over ``n_runs`` runs."""
    if seeds == "all":
        return n_runs, n_runs
    k, n = (int(x) for x in seeds.split("/"))
    return k, n


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
    # Gates (validity figures that must hold); None: the instrument the quantity uses
    # (runner.analysis.gates.gates_of). A margin quantity always has the margin gate.
    requires: tuple[str, ...] | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: str) -> str:
        return check_seeds(v)

    def needed(self, n_runs: int) -> tuple[int, int]:
        """(successes needed, runs expected)."""
        return needed(self.seeds, n_runs)


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


class InterventionGate(BaseModel):
    """The intervention-validity gate: in a dosed cell, each named control family must hold
    (label RECOVERED and control valid in at least ``seeds`` of the cell's seeds); a cell where
    more than ``tolerance`` families fail is INTERVENTION-INVALID and yields no verdict. No
    families: the gate is off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    families: tuple[str, ...] = ()
    seeds: str = "2/3"
    tolerance: int = Field(default=1, ge=0, description="failing families a cell tolerates")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: str) -> str:
        return check_seeds(v)


class Additions(BaseModel):
    """Predictions an amendment registers (the same tables as the prereg's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    predictions: tuple[Prediction, ...] = ()
    falsifiers: tuple[Prediction, ...] = ()
    dose_predictions: tuple[DosePrediction, ...] = ()

    def ids(self) -> list[str]:
        return [p.id for kind in KINDS for p in getattr(self, kind)]


KINDS = ("predictions", "falsifiers", "dose_predictions")


class Prereg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = ""
    classifier: dict[str, float | int] = Field(default_factory=dict)
    quarantine: dict[str, list[int]] = Field(default_factory=dict)
    intervention_gate: InterventionGate = Field(default_factory=InterventionGate)
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
    check_names(parse(path), path, PreregError)  # malformed, or naming what no verdict knows: not locked
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


def check_chain(records: list[dict], start: str, where: str, what: str) -> str:
    """Check a hash chain (each record's ``prev`` is the hash before it and ``hash = sha256(prev +
    record without hash)``); returns the last hash. ``start``: the lock's sha256."""
    prev = start
    for i, a in enumerate(records):
        body = {k: v for k, v in a.items() if k != "hash"}
        if a.get("prev") != prev or _amendment_hash(prev, body) != a.get("hash"):
            raise PreregError(f"{where}: {what} {i + 1} does not chain (edited file?); "
                              "restore it from version control")
        prev = a["hash"]
    return prev


def chain_record(prev: str, body: dict) -> dict:
    """``body`` with its ``prev`` and ``hash`` (the next link of a chain ending at ``prev``)."""
    body = {**body, "prev": prev}
    return {**body, "hash": _amendment_hash(prev, body)}


def unseal_log_path(path: str | Path) -> Path:
    return Path(str(path) + ".unseal.jsonl")


def read_unseal_log(path: str | Path, start: str) -> list[dict]:
    """The unseal records beside the prereg at ``path`` (none if no log), their chain checked."""
    log = unseal_log_path(path)
    if not log.exists():
        return []
    try:
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError:
        raise PreregError(f"{log}: a line is not JSON (cut short or edited?); restore it from version "
                          "control") from None
    check_chain(recs, start, str(log), "unseal record")
    return recs


def verify(path: str | Path) -> dict:
    """The lock record, after checking the file's hash, the amendment chain and the unseal log."""
    path = Path(path)
    lp = lock_path(path)
    if not path.is_file():
        raise PreregError(f"prereg file {str(path)!r} does not exist; pass the locked prereg TOML")
    if not lp.exists():
        raise PreregError(f"{path} is not locked; run `ungrok prereg lock {path}` before reading any data")
    rec = json.loads(lp.read_text())
    now = sha256_text(path.read_text())
    if now != rec["sha256"]:
        raise PreregError(
            f"{path} was edited after it was locked (sha256 {now[:12]} != locked {rec['sha256'][:12]}); "
            f"revert the edit and record the change with `ungrok prereg amend {path} --set KEY=VALUE --reason ...`"
        )
    check_chain(rec["amendments"], rec["sha256"], str(lp), "amendment")
    read_unseal_log(path, rec["sha256"])
    return rec


def _check_changes(changes: dict[str, Any]) -> None:
    for key, val in changes.items():
        section, _, name = key.partition(".")
        if section != "classifier" or name not in {f.name for f in fields(Classifier)}:
            raise PreregError(f"amendment key {key!r}: only classifier.<constant> can be changed, "
                              "e.g. classifier.displaced=0.55 (new predictions: --add FILE)")
        if not isinstance(val, (int, float)):
            raise PreregError(f"amendment {key}: value must be a number, got {val!r}")


def _check_additions(path: str | Path, rec: dict, add: dict) -> dict:
    """The additions validated (as :class:`Additions`) with ids new to the prereg, as JSON."""
    try:
        new = Additions.model_validate(add)
    except ValidationError as e:
        raise PreregError(f"amendment additions: {field_error(e)}") from None
    check_names(new, "amendment additions", PreregError)
    ids = new.ids()
    have = [p.id for kind in KINDS for p, _ in Locked(path=str(path), prereg=parse(path), record=rec).registered(kind)]
    dup = sorted({i for i in ids if ids.count(i) > 1 or i in have})
    if dup:
        raise PreregError(f"amendment additions: prediction id {dup[0]!r} is already registered; give each a new id")
    return {k: v for k, v in new.model_dump(mode="json", exclude_unset=True).items() if v}


def amend(path: str | Path, changes: dict[str, Any], reason: str, add: dict | None = None) -> dict:
    """Append a dated amendment to the lock's hash chain: ``classifier.<constant>`` changes (they
    apply to data produced after the amendment) and/or new predictions ``add`` (``{"predictions":
    [...], "falsifiers": [...], "dose_predictions": [...]}``, scored only on data first scored after
    the amendment)."""
    if not reason.strip():
        raise PreregError("an amendment needs a --reason")
    rec = verify(path)
    _check_changes(changes)
    added = _check_additions(path, rec, add) if add else {}
    if not changes and not added:
        raise PreregError("an amendment changes a constant (--set KEY=VALUE) or adds predictions (--add FILE)")
    prev = rec["amendments"][-1]["hash"] if rec["amendments"] else rec["sha256"]
    body = {"n": len(rec["amendments"]) + 1, "utc": utcnow(), "changes": changes, "reason": reason,
            **({"add": added} if added else {})}
    rec["amendments"].append(chain_record(prev, body))
    write_json_atomic(lock_path(path), rec)
    return rec


class Locked(BaseModel):
    """A verified prereg with its lock record (and unseal log); what evaluators receive."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    prereg: Prereg
    record: dict
    unseals: tuple[dict, ...] = ()

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

    def registered(self, kind: str) -> list[tuple[Any, dict]]:
        """``(prediction, registration)`` of one kind (predictions, falsifiers, dose_predictions):
        the locked ones (``{"by": "lock", "utc": locked_utc}``), then those added by amendments
        (``{"by": "amendment <n>", "amendment": n, "utc": ...}``) in chain order."""
        out: list[tuple[Any, dict]] = [(p, {"by": "lock", "utc": self.locked_utc})
                                       for p in getattr(self.prereg, kind)]
        for a in self.record["amendments"]:
            for p in getattr(Additions.model_validate(a.get("add", {})), kind):
                out.append((p, {"by": f"amendment {a['n']}", "amendment": a["n"], "utc": a["utc"]}))
        return out

    def status(self, produced_utc: str | None) -> str:
        """``confirmatory`` for data produced after the lock, ``exploratory`` before (or unknown)."""
        return "confirmatory" if produced_after(produced_utc, self.locked_utc) else "exploratory"


def unregistered() -> Locked:
    """No prereg: the paper's default constants, and every figure exploratory."""
    return Locked(path="", prereg=Prereg(), record={"sha256": None, "locked_utc": "9999-12-31T00:00:00+00:00",
                                                    "git_commit": None, "amendments": []})


def load_locked(path: str | Path) -> Locked:
    """Every evaluator's entry point: parse + verify, or refuse."""
    rec = verify(path)
    return Locked(path=str(path), prereg=parse(path), record=rec, unseals=tuple(read_unseal_log(path, rec["sha256"])))


def produced_after(produced_utc: str | None, utc: str) -> bool:
    """Whether data first scored at ``produced_utc`` (None: unknown) comes after ``utc``."""
    return produced_utc is not None and _t(produced_utc) > _t(utc)
