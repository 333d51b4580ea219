"""Typed configs, one per concern, validated on construction; a run is named by their hash.

Modelled on Ray Train's ScalingConfig/RunConfig: small frozen pydantic models composed into a
:class:`RunConfig`. Derived values are properties; nothing derived is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from runner._io import field_error, load_toml_model  # noqa: F401  (re-exported for grid, prereg, the CLI)
from runner.doses import parse_dose
from runner.world.batteries import read_battery
from runner.world.presets import PRESETS, check_reference, drawn_families, probe_families, undrawn_induction_families
from runner.world.rules import known_classes, known_families  # noqa: F401  (known_families re-exported)

_BUDGET_RE = re.compile(r"^(packed|dn(\d+(\.\d+)?))$")
_BUILT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# A field marked ``json_schema_extra={OMIT_AT_DEFAULT: True}`` enters the config hash only when it
# differs from its default: a field added after runs were named leaves their ids unchanged.
OMIT_AT_DEFAULT = "hash_omit_at_default"
_LATE: JsonDict = {OMIT_AT_DEFAULT: True}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CorpusConfig(_Frozen):
    """Which corpus a run trains on.

    ``name``: a built-in preset (``stories`` high support, ``web`` low support, ``synthetic``
    which needs ``support``), ``hf:<path>`` for a Hugging Face dataset saved on disk (word-level
    tokenizer), or ``built:<name>`` for a real-text corpus built with ``ungrok corpus build --source
    ... --name <name>`` (``runner.data.textcorpus``; BPE, its rows cut ``story_tokens`` long).
    ``sha256``: for ``built:``, the token stream the run must read (the CLI pins it from the
    corpus's manifest, so a rebuilt corpus is a different run); None reads whatever is there.
    ``support``: for synthetic corpora, P(the stream shows the rule's answer | the competitor's
    in-context copy disagrees with it), for every family; ``reuse``: P(a family sentence reuses a key
    used earlier in its story), the rate of in-context contests. Both override the preset's value."""

    name: str = "web"
    seed: int = Field(default=0, ge=0)
    n_stories: int = Field(default=160_000, gt=0, description="stories (rows of story_tokens tokens)")
    support: float | None = Field(default=None, gt=0.0, le=1.0)
    reuse: float | None = Field(default=None, ge=0.0, le=1.0, json_schema_extra=_LATE)
    story_tokens: int = Field(default=64, ge=16, le=4096)
    text_column: str = "text"
    vocab_size: int = Field(default=2000, ge=50, description="tokenizer size for hf: corpora")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", json_schema_extra=_LATE)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v.startswith("hf:"):
            if len(v) <= 3:
                raise ValueError("corpus 'hf:' needs a dataset path, e.g. hf:/data/my_ds")
            return v
        if v.startswith("built:"):
            if not _BUILT_RE.match(v[6:]):
                raise ValueError(f"corpus {v!r}: built:<name> names a corpus built with `ungrok corpus build "
                                 "--source ... --name <name>` (letters, digits, . _ -)")
            return v
        if v not in PRESETS:
            raise ValueError(f"unknown corpus {v!r}; use one of {PRESETS.names()}, hf:<path>, or the --name of a "
                             "corpus built with `ungrok corpus build --source` (built:<name>)")
        return v

    @model_validator(mode="after")
    def _synthetic_needs_support(self) -> "CorpusConfig":
        if self.name.startswith("synthetic") and self.support is None:
            raise ValueError(f"corpus {self.name!r} needs support=<0..1>, e.g. --support 0.3")
        if self.reuse is not None and not self.is_world:
            raise ValueError(f"corpus.reuse is for the built-in world's presets, not {self.name!r}; remove it")
        return self

    @property
    def is_hf(self) -> bool:
        return self.name.startswith("hf:")

    @property
    def is_built(self) -> bool:
        """A real-text corpus built by ``ungrok corpus build --source`` (``built:<name>``)."""
        return self.name.startswith("built:")

    @property
    def is_world(self) -> bool:
        """A corpus of the built-in world (its word-level tokenizer is known before it is built)."""
        return not (self.is_hf or self.is_built)

    @property
    def label(self) -> str:
        """The corpus in run ids and folder names: the preset, ``hf``, or the built corpus's name."""
        return "hf" if self.is_hf else self.name.removeprefix("built:")

    @property
    def dirname(self) -> str:
        """Folder under ``<out>/corpora``: ``web-s0`` for the defaults, hashed otherwise; a built corpus's name."""
        if self.is_built:
            return self.label
        defaults = {k: f.default for k, f in CorpusConfig.model_fields.items() if k not in ("name", "seed")}
        if self.model_dump(exclude={"name", "seed"}) == defaults and not self.is_hf:
            return f"{self.name}-s{self.seed}"
        label = "hf" if self.is_hf else self.name
        return f"{label}-{config_hash(self)[:8]}-s{self.seed}"


class ModelConfig(_Frozen):
    """A from-scratch TransformerLens-native decoder (``runner.model``). ``arch``: ``tl``
    (LayerNorm, learned positions, biases) or ``nanochat`` (the paper's). ``d_vocab``: embedding
    rows (None: the tokenizer's size). ``logit_soft_cap``: logits -> cap * tanh(logits / cap).
    ``attention``: ``native`` (each arch's own kernel) or, for ``tl``, ``sdpa``: the fused kernel
    whenever no hook reads the pattern or scores (``runner.attention``; same function, other rounding)."""

    n_layers: int = Field(default=2, ge=1)
    d_model: int = Field(default=64, ge=8)
    n_heads: int = Field(default=4, ge=1)
    d_mlp: int = Field(default=256, ge=8)
    n_ctx: int = Field(default=64, ge=8)
    act_fn: Literal["gelu", "relu", "silu", "relu2"] = "gelu"
    arch: Literal["tl", "nanochat"] = Field(default="tl", json_schema_extra=_LATE)
    d_vocab: int | None = Field(default=None, ge=8, json_schema_extra=_LATE)
    logit_soft_cap: float | None = Field(default=None, gt=0, json_schema_extra=_LATE)
    attention: Literal["native", "sdpa"] = Field(default="native", json_schema_extra=_LATE)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.act_fn == "relu2" and self.arch != "nanochat":
            raise ValueError("act_fn 'relu2' needs arch 'nanochat'; use gelu, relu or silu with arch 'tl'")
        if self.attention == "sdpa" and self.arch != "tl":
            raise ValueError("model.attention 'sdpa' is for arch 'tl' (nanochat's attention is already fused when "
                             "no hook reads it); leave attention at 'native'")
        return self

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


PARAM_GROUPS = ("matrix", "embed", "head", "scalar")


class OptimConfig(_Frozen):
    """Optimizer and schedule (``runner.train.optim``). ``name``: ``adamw``, or ``muon`` (Muon on the blocks'
    matrices, AdamW with ``betas`` on the rest). Groups ``matrix`` (the blocks' 2-D weights), ``embed``, ``head``,
    ``scalar`` (the rest); a group's lr is ``<group>_lr`` or else ``lr``; ``weight_decay`` applies to
    ``weight_decay_groups``. At update s of S: linear warm-up, cosine warm-down to 0 over the final ``warmdown_frac``
    (1: all), its factor to the power ``warmdown_power``; ``weight_decay_schedule`` ``linear``: wd * (1 - s/S)."""

    lr: float = Field(default=1e-3, gt=0)
    warmup_steps: int = Field(default=50, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    name: Literal["adamw", "muon"] = Field(default="adamw", json_schema_extra=_LATE)
    matrix_lr: float | None = Field(default=None, gt=0, json_schema_extra=_LATE)
    embed_lr: float | None = Field(default=None, gt=0, json_schema_extra=_LATE)
    head_lr: float | None = Field(default=None, gt=0, json_schema_extra=_LATE)
    scalar_lr: float | None = Field(default=None, gt=0, json_schema_extra=_LATE)
    weight_decay_groups: tuple[Literal["matrix", "embed", "head", "scalar"], ...] = Field(
        default=PARAM_GROUPS, json_schema_extra=_LATE)
    weight_decay_schedule: Literal["constant", "linear"] = Field(default="constant", json_schema_extra=_LATE)
    warmdown_frac: float = Field(default=0.0, ge=0.0, le=1.0, json_schema_extra=_LATE)
    warmdown_power: float = Field(default=1.0, gt=0.0, le=8.0, json_schema_extra=_LATE)
    muon_momentum: float = Field(default=0.95, ge=0.0, lt=1.0, json_schema_extra=_LATE)


class TrainConfig(_Frozen):
    """How long and on what data budget.

    ``budget``: ``packed`` (fresh data every step, never repeated) or ``dn<R>`` (unique tokens =
    R x parameter count, cycled over epochs in a fresh seeded order each epoch).
    """

    steps: int = Field(default=5000, gt=0)
    batch_size: int = Field(default=32, gt=0)
    budget: str = "packed"
    seed: int = Field(default=42, ge=0)
    zero_stage: Literal[0, 1, 2] = 0
    threads: int = Field(default=1, ge=1, description="torch threads per training process")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        default="fp32", json_schema_extra=_LATE,
        description="bf16: DeepSpeed's torch autocast to bfloat16 (fp32 weights); auto: bf16 on CUDA, fp32 on CPU")

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str) -> str:
        m = _BUDGET_RE.match(v)
        if not m or (m.group(2) is not None and float(m.group(2)) <= 0):
            raise ValueError(f"budget {v!r} is not valid; use 'packed' or 'dn<ratio>' with ratio > 0, e.g. dn5")
        return v

    @property
    def data_to_params(self) -> float | None:
        return None if self.budget == "packed" else float(self.budget[2:])


class ScheduleConfig(_Frozen):
    """When to checkpoint (and score). Every ``every`` steps, every ``dense_every`` inside
    ``[dense_start, dense_end]``; step 0 and the last step always. ``keep_resume`` full DeepSpeed
    checkpoints (with optimizer state) are kept for resume; model weights are kept for every step."""

    every: int = Field(default=50, gt=0)
    dense_every: int | None = Field(default=None, gt=0)
    dense_start: int = Field(default=0, ge=0)
    dense_end: int = Field(default=10**9, ge=0)
    keep_resume: int = Field(default=2, ge=1)

    def steps(self, total: int) -> list[int]:
        s = set(range(0, total + 1, self.every)) | {total}
        if self.dense_every:
            lo, hi = self.dense_start, min(self.dense_end, total)
            s |= {t for t in range(0, hi + 1, self.dense_every) if t >= lo}
        return sorted(s)


class ProbeConfig(_Frozen):
    """What is scored at every checkpoint.

    ``battery``: a JSONL battery in the reference schema (``rvp4.jsonl``); every family it holds is
    scored unless ``families`` names a subset, and such a family needs no registered rule (only
    support counting and interventions do). Without a battery the items are generated from the
    registered rule ``families`` (``n_per_cell`` per condition and split, ``n_neutral`` neutral).
    ``max_unknown``: the largest fraction of items that may hold a word outside the run's tokenizer
    (encoded as its unknown token); a battery above it is refused before training starts."""

    families: tuple[str, ...] = ("pronoun_gender", "number_agreement")
    battery: str | None = Field(default=None, description="JSONL battery path; default: generated from the families")
    n_per_cell: int = Field(default=64, gt=0)
    n_neutral: int = Field(default=32, ge=0)
    max_unknown: float = Field(default=0.5, ge=0.0, le=1.0, json_schema_extra={OMIT_AT_DEFAULT: True},
                               description="largest fraction of items with a word outside the vocabulary")

    @model_validator(mode="before")
    @classmethod
    def _families_from_battery(cls, data):
        """A battery without ``families``: every family the battery holds, in its order (the file is
        read here, so a missing or malformed battery is refused with the config)."""
        if isinstance(data, dict) and data.get("battery") and "families" not in data:
            fams = dict.fromkeys(it.family for it in read_battery(data["battery"]))
            data = {**data, "families": tuple(fams)}
        return data

    @model_validator(mode="after")
    def _families(self) -> "ProbeConfig":
        if not self.families:
            raise ValueError("families must name at least one family")
        if self.battery is None:  # generated items need the rule that generates them
            known_families(self.families)
        return self


class InterventionConfig(_Frozen):
    """Where and when a run's dose applies (ignored, and left out of the run id, when dose is ``none``).
    ``families``: the rule families whose events the intervention edits (empty: every probe
    family). ``start_step``/``end_step``: the window of training steps that read the intervened
    stream; outside it the run reads the unedited corpus (``end_step`` None: to the end), so
    "inject only after the collapse" is ``start_step=3000``. ``seed``: which events are flipped
    and where injected documents go (the stream is shared by every training seed).
    """

    families: tuple[str, ...] = ()
    start_step: int = Field(default=0, ge=0)
    end_step: int | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    classes: Annotated[tuple[str, ...], AfterValidator(known_classes)] = ()  # in every dosed id, on purpose
    reference: Annotated[str, AfterValidator(check_reference)] = Field(default="paper", json_schema_extra=_LATE)
    matched: bool = Field(default=True, json_schema_extra=_LATE)
    whole_dose: bool = Field(default=False, json_schema_extra=_LATE)

    @property
    def window(self) -> str:
        """``""`` (whole run) or ``"<start>-<end|end>"``: a different treatment in verdicts and selectors."""
        if self.start_step == 0 and self.end_step is None:
            return ""
        return f"{self.start_step}-{self.end_step if self.end_step is not None else 'end'}"

    @field_validator("families")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return known_families(v)

    @model_validator(mode="after")
    def _window(self) -> "InterventionConfig":
        if self.end_step is not None and self.end_step <= self.start_step:
            raise ValueError(f"end_step ({self.end_step}) must be after start_step ({self.start_step})")
        return self

    def active(self, step: int) -> bool:
        """Does the batch of ``step`` come from the intervened stream?"""
        return step >= self.start_step and (self.end_step is None or step < self.end_step)


class RunConfig(_Frozen):
    corpus: CorpusConfig = CorpusConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    probes: ProbeConfig = ProbeConfig()
    dose: str = Field(default="none", description="'none' or '<intervention>:<level>' "
                                                  "(interventions register in runner.doses.DOSES)")
    intervention: InterventionConfig = InterventionConfig()

    @model_validator(mode="before")
    @classmethod
    def _resolve_sections(cls, data):
        """A dose-none run has no intervention: its settings are dropped, so the run (config.json and
        id) is the same whatever a grid's [intervention] section says. No ``probes.families`` and no
        battery: a preset that does not write the default families (``*-adjacent``) probes the ones it
        writes (``runner.world.presets.probe_families``); every other run keeps the default."""
        if not isinstance(data, dict):
            return data
        if data.get("dose", "none") == "none" and "intervention" in data:
            data = {k: v for k, v in data.items() if k != "intervention"}
        c, p = data.get("corpus"), data.get("probes") or {}
        name = c.name if isinstance(c, CorpusConfig) else c.get("name", "web") if isinstance(c, dict) else None
        if name and isinstance(p, dict) and not {"families", "battery"} & p.keys():
            data = {**data, "probes": {**p, "families": probe_families(name, ProbeConfig().families)}}
        return data

    @field_validator("dose")
    @classmethod
    def _dose(cls, v: str) -> str:
        parse_dose(v)
        return v

    @model_validator(mode="after")
    def _ctx_fits(self) -> "RunConfig":
        if self.corpus.story_tokens > self.model.n_ctx:
            raise ValueError(f"corpus.story_tokens ({self.corpus.story_tokens}) exceeds model.n_ctx "
                             f"({self.model.n_ctx}); raise model.n_ctx or shorten the stories")
        if self.corpus.is_world and self.probes.battery is None and (
                miss := undrawn_induction_families(self.corpus.name, self.probes.families)):
            raise ValueError(f"probes.families: {list(miss)} never occur in the stories of corpus {self.corpus.name!r}"
                             f"; probe the families it writes: {list(drawn_families(self.corpus.name))}")
        if self.dose != "none":
            for f in self.intervention.families:
                if f not in self.probes.families:
                    raise ValueError(f"intervention.families: {f!r} is not a probed family {self.probes.families}; "
                                     "probe what you intervene on")
            if self.intervention.start_step >= self.train.steps:
                raise ValueError(f"intervention.start_step ({self.intervention.start_step}) is past the last step "
                                 f"({self.train.steps})")
        if self.optim.name == "muon" and self.train.zero_stage:
            raise ValueError(f"optim.name 'muon' needs train.zero_stage 0 (ZeRO {self.train.zero_stage} shards "
                             "matrices flat; Muon needs them whole); set zero_stage = 0 or use adamw")
        need = self.train.steps * self.train.batch_size
        if self.train.budget == "packed" and self.corpus.is_world and self.corpus.n_stories < need:
            raise ValueError(f"train.budget 'packed' needs {need:,} fresh stories (steps {self.train.steps} x batch "
                             f"{self.train.batch_size}) but corpus.n_stories is {self.corpus.n_stories:,}; raise "
                             "corpus.n_stories or use a dn<ratio> budget")
        return self

    @property
    def run_id(self) -> str:
        """``<corpus>-<budget>-s<seed>-<hash>``: readable, and unique to the resolved config."""
        label = self.corpus.label
        dose = "" if self.dose == "none" else "-" + self.dose.replace(":", "").replace("=", "")
        return f"{label}-{self.train.budget}{dose}-s{self.train.seed}-{config_hash(self)[:10]}"

    @property
    def dose_families(self) -> tuple[str, ...]:
        """The families a dose edits: ``intervention.families`` or every probed family."""
        return self.intervention.families or self.probes.families


def _omit_defaults(cfg: BaseModel, data: dict) -> dict:
    """``data`` (``cfg``'s JSON dump) less the :data:`OMIT_AT_DEFAULT` fields at their default, at any depth."""
    out = dict(data)
    for name, f in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get(OMIT_AT_DEFAULT) and value == f.default:
            out.pop(name, None)
        elif isinstance(value, BaseModel) and isinstance(out.get(name), dict):
            out[name] = _omit_defaults(value, out[name])
    return out


def config_hash(cfg: BaseModel) -> str:
    """sha256 of the config's canonical JSON (sorted keys, every default resolved).

    A RunConfig's ``dose`` and ``intervention`` enter only when the dose is not ``none``, and a
    field marked :data:`OMIT_AT_DEFAULT` only when it is not at its default, so ids of runs made
    before those existed are unchanged."""
    data = _omit_defaults(cfg, cfg.model_dump(mode="json"))
    if isinstance(cfg, RunConfig) and data.get("dose") == "none":
        data.pop("dose")
        data.pop("intervention")
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
