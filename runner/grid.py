"""Grid specs: corpora x budgets x seeds x doses, expanded deterministically into run configs.

A spec file (TOML)::

    name = "demo"
    [axes]
    corpora = ["web", "stories"]          # corpus names (or tables: {name = "synthetic", support = 0.3})
    budgets = ["packed", "dn5", "dn15"]
    seeds = [42, 43, 44]
    doses = ["none"]                      # "<intervention>:<level>"; interventions register in DOSES
    # a corpus table may carry its own doses, budgets or seeds, e.g. kill where the rule survives,
    # rescue where it dies:
    #   corpora = [{name = "stories", doses = ["none", "kill:1.0"]}, {name = "web", doses = ["rescue:3"], seeds = [42]}]
    [model]  / [optim] / [train] / [schedule] / [probes] / [corpus] / [intervention]   # RunConfig sections
    [resources]
    num_cpus = 1                          # per run
    num_gpus = 0                          # > 1: multi-GPU DeepSpeed through Ray Train
    custom = { }                          # Ray custom resources per run

Expansion order is fixed (corpus, budget, dose, seed) and each cell's id is its RunConfig's hash.
Everything is validated on construction, before any job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runner.config import (
    InterventionConfig,
    RunConfig,
    TrainConfig,
    field_error,
    load_toml_model,
)
from runner.doses import parse_dose


class GridError(ValueError):
    """A grid spec is invalid; the message names the field."""


class Axes(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    corpora: list[str | dict[str, Any]] = Field(min_length=1)
    budgets: list[str] = Field(default_factory=lambda: ["packed"], min_length=1)
    seeds: list[int] = Field(min_length=1)
    doses: list[str] = Field(default_factory=lambda: ["none"], min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"duplicate seeds {dup}; list each seed once")
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[str]) -> list[str]:
        for b in v:
            TrainConfig(budget=b)
        if len(set(v)) != len(v):
            raise ValueError("duplicate budgets")
        return v

    @field_validator("doses")
    @classmethod
    def _doses(cls, v: list[str]) -> list[str]:
        return _check_doses(v)

    @field_validator("corpora")
    @classmethod
    def _corpus_axes(cls, v: list) -> list:
        checks = {"doses": _check_doses, "seeds": cls._unique_seeds, "budgets": cls._budgets}
        for c in v:
            if isinstance(c, dict):
                if "name" not in c:
                    raise ValueError(f"corpus table {c} needs a name")
                for axis, check in checks.items():
                    if axis in c:
                        if not isinstance(c[axis], list) or not c[axis]:
                            raise ValueError(f"corpus {c['name']!r}: {axis} must be a non-empty list")
                        try:
                            check(c[axis])
                        except ValueError as e:
                            raise ValueError(f"corpus {c['name']!r}: {axis}: {e}") from None
        return v

    def axis_for(self, corpus: str | dict[str, Any], axis: str) -> list:
        """The corpus table's own list for ``axis`` (doses, seeds, budgets), else the grid's."""
        own = corpus.get(axis) if isinstance(corpus, dict) else None
        return own if own is not None else getattr(self, axis)


def _check_doses(v: list[str]) -> list[str]:
    for d in v:
        parse_dose(d)
    if len(set(v)) != len(v):
        raise ValueError("duplicate doses")
    return v


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_cpus: float = Field(default=1, gt=0)
    num_gpus: float = Field(default=0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)
    max_retries: int = Field(default=3, ge=0, description="Ray task retries on worker death")


class GridSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "sweep"
    axes: Axes
    corpus: dict[str, Any] = Field(default_factory=dict, description="corpus fields shared by every cell")
    model: dict[str, Any] = Field(default_factory=dict)
    optim: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    schedule: dict[str, Any] = Field(default_factory=dict)
    probes: dict[str, Any] = Field(default_factory=dict)
    intervention: dict[str, Any] = Field(default_factory=dict, description="families, start_step, end_step, seed")
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _cells_valid(self) -> "GridSpec":
        if "seed" in self.train or "budget" in self.train:
            raise ValueError("train.seed / train.budget are grid axes; set them under [axes]")
        self.cells()  # every cell must make a valid RunConfig
        return self

    def cells(self) -> list["Cell"]:
        out = []
        for c in self.axes.corpora:
            corpus = {**self.corpus, **({"name": c} if isinstance(c, str) else c)}
            for axis in ("doses", "seeds", "budgets"):
                corpus.pop(axis, None)
            for b in self.axes.axis_for(c, "budgets"):
                for d in self.axes.axis_for(c, "doses"):
                    for s in self.axes.axis_for(c, "seeds"):
                        try:
                            cfg = RunConfig.model_validate(dict(
                                corpus=corpus, model=self.model, optim=self.optim,
                                train={**self.train, "budget": b, "seed": s}, schedule=self.schedule,
                                probes=self.probes, dose=d, intervention=self.intervention))
                        except ValidationError as e:
                            raise ValueError(f"cell corpus={corpus.get('name')} budget={b} dose={d} seed={s}: "
                                             f"{field_error(e)}") from None
                        out.append(Cell(corpus=_corpus_label(c), budget=b, dose=d, seed=s, config=cfg))
        return out


def _corpus_label(c: str | dict[str, Any]) -> str:
    """``web``, or ``synthetic[support=0.3]`` for a table with settings of its own."""
    if isinstance(c, str):
        return c
    extra = {k: v for k, v in c.items() if k not in ("name", "doses", "seeds", "budgets")}
    return c["name"] + ("[" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())) + "]" if extra else "")


class Cell(BaseModel):
    model_config = ConfigDict(frozen=True)

    corpus: str
    budget: str
    dose: str
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def label(self) -> str:
        return f"{self.corpus}/{self.budget}/{self.dose}/s{self.seed}"


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a spec file; errors name the field (``axes.seeds: duplicate seeds [1]``)."""
    return load_toml_model(path, GridSpec, GridError, "grid spec", hint=_allowed)


def _allowed(loc) -> str:

    model = {"axes": Axes, "resources": Resources,
             "intervention": InterventionConfig}.get(str(loc[0]) if len(loc) > 1 else "", GridSpec)
    return ", ".join(model.model_fields)
