"""What a grid costs before any of it runs: cells, parameters, tokens, model FLOPs, GPU-hours.

Per cell: tokens = steps x batch x row length (what the model processes, padding included);
FLOPs = tokens x ``runner.model.flops_per_token`` (6 N + 12 L d_model T: training only, no probe
scoring, no checkpoints); GPU-hours = FLOPs / the achieved model FLOP/s of one GPU, from one of:

- a measured throughput file (written by ``bench/paper_throughput.py`` on the GPU in question):
  its tokens/s x its model's FLOPs per token. A cell of another shape is priced at the same
  FLOP/s (MFU carries over between shapes only roughly: say so when it matters);
- a stated ``tokens_per_second`` (every cell processes that many tokens per GPU-second);
- a stated MFU x peak FLOP/s (default: :data:`ASSUMED`, labelled as an assumption).

Nothing is built or started: the parameter count is computed from the config
(``runner.model.count_params``), the vocabulary from ``model.d_vocab`` or the corpus's tokenizer
size (the built-in world's vocabulary, or ``corpus.vocab_size`` for a text corpus, an upper bound).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runner.config import RunConfig
from runner.grid import GridSpec
from runner.model import count_params, flops_per_token
from runner.world import vocab as V
from runner.world.presets import PRESETS

H100_BF16_PEAK = 989e12  # dense bf16 tensor-core FLOP/s of an H100 SXM (NVIDIA's datasheet)
ASSUMED = (0.10, H100_BF16_PEAK)  # (MFU, peak FLOP/s) used when nothing is measured or stated: a guess


@dataclass(frozen=True)
class Throughput:
    """Achieved model FLOP/s per GPU, or tokens/s when stated so; ``source`` says which."""

    source: str
    flops_per_second: float | None = None
    tokens_per_second: float | None = None

    @classmethod
    def measured(cls, path: str | Path) -> "Throughput":
        """From a file ``bench/paper_throughput.py`` wrote (tokens/s and FLOPs per token)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"throughput file {str(path)!r} does not exist; write it with bench/paper_throughput.py")
        try:
            m = json.loads(path.read_text())
            fps = float(m["tokens_per_second"]) * float(m["flops_per_token"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a throughput file of bench/paper_throughput.py ({e})") from None
        mfu = f", MFU {m['mfu']:.1%}" if m.get("mfu") is not None else ""
        return cls(f"measured on {m.get('device', '?')} ({path}: {float(m['tokens_per_second']):,.0f} tokens/s "
                   f"at {m.get('precision', '?')}{mfu})", flops_per_second=fps)

    @classmethod
    def stated_mfu(cls, mfu: float, peak: float, assumed: bool = False) -> "Throughput":
        what = "assumed" if assumed else "stated"
        return cls(f"{what}: {mfu:.0%} MFU of {peak / 1e12:,.0f} TFLOP/s peak", flops_per_second=mfu * peak)

    @classmethod
    def stated_tokens(cls, tokens_per_second: float) -> "Throughput":
        return cls(f"stated: {tokens_per_second:,.0f} tokens/s per GPU", tokens_per_second=tokens_per_second)

    def gpu_hours(self, tokens: float, flops: float) -> float:
        if self.tokens_per_second is not None:
            return tokens / self.tokens_per_second / 3600
        assert self.flops_per_second is not None
        return flops / self.flops_per_second / 3600


def tokenizer_size(cfg: RunConfig) -> int:
    """The tokenizer's size the model will see: the built-in world's vocabulary or, for a text
    corpus, ``corpus.vocab_size`` (the size it is trained to, at most)."""
    return len(V.all_words()) if cfg.corpus.name in PRESETS else cfg.corpus.vocab_size


@dataclass(frozen=True)
class CellCost:
    label: str
    run_id: str
    params: int
    tokens: int
    unique_tokens: int
    flops: float
    gpu_hours: float


def cell_cost(label: str, cfg: RunConfig, throughput: Throughput) -> CellCost:
    vocab = tokenizer_size(cfg)
    n = count_params(cfg.model, vocab)["total"]
    seq = cfg.corpus.story_tokens
    tokens = cfg.train.steps * cfg.train.batch_size * seq
    r = cfg.train.data_to_params
    flops = flops_per_token(cfg.model, vocab, seq) * tokens
    return CellCost(label, cfg.run_id, n, tokens, tokens if r is None else min(tokens, round(r * n)), flops,
                    throughput.gpu_hours(tokens, flops))


@dataclass(frozen=True)
class Plan:
    name: str
    cells: list[CellCost]
    throughput: Throughput
    gpus_per_cell: float

    @property
    def totals(self) -> dict[str, float]:
        return {"cells": len(self.cells), "tokens": sum(c.tokens for c in self.cells),
                "flops": sum(c.flops for c in self.cells), "gpu_hours": sum(c.gpu_hours for c in self.cells)}

    def to_json(self) -> dict:
        return {"grid": self.name, "throughput": self.throughput.source, "gpus_per_cell": self.gpus_per_cell,
                "totals": self.totals, "cells": [c.__dict__ for c in self.cells]}


def plan_grid(spec: GridSpec, throughput: Throughput | None = None) -> Plan:
    """The cost of every cell of ``spec`` (nothing is built or started)."""
    tp = throughput or Throughput.stated_mfu(*ASSUMED, assumed=True)
    cells = [cell_cost(c.label, c.config, tp) for c in spec.cells()]
    return Plan(spec.name, cells, tp, spec.resources.num_gpus)
