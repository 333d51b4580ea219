"""Grid specs: corpora x budgets x seeds x doses, expanded deterministically into run configs.

A spec file (TOML)::

    name = "demo"
    [axes]
    corpora = ["web", "stories"]          # corpus names (or tables: {name = "synthetic", support = 0.3})
    budgets = ["packed", "dn5", "dn1.5"]
    seeds = [42, 43, 44]
    doses = ["none"]                      # "<intervention>:<level>"; interventions register in DOSES
    # a corpus table may carry its own doses, budgets or seeds, e.g. kill where the rule survives,
    # rescue where it dies:
    #   corpora = [{name = "stories", doses = ["none", "kill:1.0"]}, {name = "web", doses = ["rescue:3"], seeds = [42]}]
    preset = "paper"                      # optional: start every cell from a run preset (RUN_PRESETS);
                                          # a corpus table's arm = "web" picks the preset's arm
    [model]  / [optim] / [train] / [schedule] / [probes] / [corpus] / [intervention]   # RunConfig sections
    [resources]
    num_cpus = 1                          # per run
    num_gpus = 0                          # > 1: multi-GPU DeepSpeed through Ray Train
    custom = { }                          # Ray custom resources per run

Expansion order is fixed (corpus, budget, dose, seed) and each cell's id is its RunConfig's hash.
Everything is validated on construction, before any job starts.

A run preset (:class:`RunPreset`, registered in :data:`RUN_PRESETS`) is a named set of RunConfig
sections, plus named *arms* (settings that differ by corpus, e.g. the paper's optimizer for
TinyStories and for web text) chosen per corpus name or explicitly. Precedence, lowest first:
the preset's sections, its arm, the grid's sections (or ``ungrok train``'s flags).
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
from runner.registry import Registry


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


SECTIONS = ("corpus", "model", "optim", "train", "schedule", "probes")


class RunPreset(BaseModel):
    """A named starting point for run configs: ``sections`` (RunConfig sections) and ``arms``
    (named section overrides that differ by corpus); ``corpus_arms`` maps a corpus name to its
    arm. ``sections_for`` resolves them for one corpus."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str
    sections: dict[str, dict[str, Any]]
    arms: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    corpus_arms: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> "RunPreset":
        for part in [self.sections, *self.arms.values()]:
            if set(part) - set(SECTIONS):
                raise ValueError(f"preset sections {sorted(set(part) - set(SECTIONS))} are not among {SECTIONS}")
        if set(self.corpus_arms.values()) - set(self.arms):
            raise ValueError(f"corpus_arms names arms {sorted(set(self.corpus_arms.values()) - set(self.arms))} "
                             "that are not defined")
        return self

    def arm_for(self, corpus: str, arm: str | None = None) -> str | None:
        """``arm`` if given (checked), else the corpus's arm; an error when arms exist and none applies."""
        if arm is None and self.arms:
            arm = self.corpus_arms.get(corpus.removeprefix("built:"))
            if arm is None:
                raise ValueError(f"corpus {corpus!r} has no arm in this preset (it sets {sorted(self.corpus_arms)}); "
                                 f"choose one of {sorted(self.arms)} (arm = ... in the grid's corpus table, "
                                 "--arm for ungrok train)")
        if arm is not None and arm not in self.arms:
            raise ValueError(f"unknown arm {arm!r}; this preset has {sorted(self.arms) or 'none'}")
        return arm

    def sections_for(self, corpus: str, arm: str | None = None) -> dict[str, dict[str, Any]]:
        """The preset's sections with the arm's overrides merged in (one level deep)."""
        chosen = self.arms[a] if (a := self.arm_for(corpus, arm)) else {}
        return {k: {**self.sections.get(k, {}), **chosen.get(k, {})} for k in SECTIONS}


RUN_PRESETS: Registry[RunPreset] = Registry("run preset")

# The paper's frozen configs (Li & Sreedhar 2026; docs/paper-setting.md): a 4-layer, d_model 256,
# 2-head nanochat-style decoder (11.5M parameters at vocab 8,192) on rows of 2,048 tokens, batch
# 32, 4,400 steps; Muon on matrices, AdamW (0.9, 0.95) elsewhere; no warm-up, cosine warm-down over
# the final 30%, weight decay on the matrices decayed linearly to 0; checkpoints every 100 steps and
# every 25 in [100, 2400]. The optimizer differs by corpus: the TinyStories arm and the web arm.
RUN_PRESETS.register("paper", RunPreset(
    description="the paper's model and schedule (4L d256 2H nanochat-style, 11.5M params, Muon + AdamW)",
    sections={
        "corpus": {"story_tokens": 2048},
        "model": {"arch": "nanochat", "n_layers": 4, "d_model": 256, "n_heads": 2, "d_mlp": 1024, "n_ctx": 2048,
                  "act_fn": "relu2", "d_vocab": 8192, "logit_soft_cap": 15.0},
        "optim": {"name": "muon", "betas": (0.9, 0.95), "warmup_steps": 0, "warmdown_frac": 0.3,
                  "weight_decay_groups": ("matrix",), "weight_decay_schedule": "linear", "muon_momentum": 0.95},
        "train": {"steps": 4400, "batch_size": 32, "precision": "auto"},
        "schedule": {"every": 100, "dense_every": 25, "dense_start": 100, "dense_end": 2400},
    },
    arms={
        "tinystories": {"optim": {"lr": 0.04, "matrix_lr": 0.04, "scalar_lr": 0.04, "embed_lr": 0.6, "head_lr": 0.6,
                                  "weight_decay": 0.2}},
        "web": {"optim": {"lr": 0.02, "matrix_lr": 0.02, "scalar_lr": 0.02, "embed_lr": 0.2, "head_lr": 0.2,
                          "weight_decay": 0.0}},
    },
    corpus_arms={"tinystories": "tinystories", "stories": "tinystories", "web": "web"},  # built:<name> or a preset
))


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_cpus: float = Field(default=1, gt=0)
    num_gpus: float = Field(default=0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)
    max_retries: int = Field(default=3, ge=0, description="Ray task retries on worker death")


class GridSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "sweep"
    preset: str | None = Field(default=None, description="a run preset (RUN_PRESETS) every cell starts from")
    axes: Axes
    corpus: dict[str, Any] = Field(default_factory=dict, description="corpus fields shared by every cell")
    model: dict[str, Any] = Field(default_factory=dict)
    optim: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    schedule: dict[str, Any] = Field(default_factory=dict)
    probes: dict[str, Any] = Field(default_factory=dict)
    intervention: dict[str, Any] = Field(default_factory=dict, description="families, start_step, end_step, seed")
    resources: Resources = Resources()

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        if v is not None and v not in RUN_PRESETS:
            raise ValueError(f"unknown run preset {v!r}; known: {RUN_PRESETS.names()}")
        return v

    @model_validator(mode="after")
    def _cells_valid(self) -> "GridSpec":
        if "seed" in self.train or "budget" in self.train:
            raise ValueError("train.seed / train.budget are grid axes; set them under [axes]")
        self.cells()  # every cell must make a valid RunConfig
        return self

    def sections(self, c: str | dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The RunConfig sections of corpus entry ``c``'s cells (preset, its arm, then this grid)."""
        name, arm = (c, None) if isinstance(c, str) else (c["name"], c.get("arm"))
        base = RUN_PRESETS.get(self.preset).sections_for(name, arm) if self.preset else {}
        if arm is not None and not self.preset:
            raise ValueError(f"corpus {name!r}: arm {arm!r} needs a preset (preset = ... at the top)")
        entry = {"name": c} if isinstance(c, str) else {k: v for k, v in c.items()
                                                        if k not in ("doses", "seeds", "budgets", "arm")}
        own = {"corpus": {**self.corpus, **entry}, "model": self.model, "optim": self.optim, "train": self.train,
               "schedule": self.schedule, "probes": self.probes}
        return {k: {**base.get(k, {}), **own[k]} for k in SECTIONS}

    def cells(self) -> list["Cell"]:
        out = []
        for c in self.axes.corpora:
            sec = self.sections(c)
            corpus = sec["corpus"]
            for b in self.axes.axis_for(c, "budgets"):
                for d in self.axes.axis_for(c, "doses"):
                    for s in self.axes.axis_for(c, "seeds"):
                        try:
                            cfg = RunConfig.model_validate(dict(
                                sec, train={**sec["train"], "budget": b, "seed": s}, dose=d,
                                intervention=self.intervention))
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
