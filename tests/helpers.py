"""Helpers shared by tests: tiny run configs and grid specs, the reference battery's path.

Import them as ``from tests.helpers import tiny_run_config``; fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import os

from runner.config import RunConfig

REFERENCE_BATTERY = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "batteries",
                                 "rvp4.jsonl")
# 400 trajectories with what the paper's frozen classifier computes for each (classifier_golden.md)
CLASSIFIER_GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference",
                                 "classifier_golden.jsonl")


TINY_GRID = """
name = "{name}"
[axes]
corpora = {corpora}
budgets = ["packed"]
seeds = {seeds}
[corpus]
n_stories = {n_stories}
[model]
d_model = 32
n_heads = 2
d_mlp = 64
[train]
steps = {steps}
batch_size = 16
[schedule]
every = 20
[probes]
n_per_cell = 8
n_neutral = 4
{probes_extra}
[resources]
num_cpus = 1
{extra}
"""


def tiny_grid_spec(path, *, name: str = "t", corpora: str = '["web"]', seeds=(1,), steps: int = 40,
                   probes_extra: str = "", extra: str = ""):
    """Write a grid spec of tiny cells (2-layer d32 model, ``steps`` steps, a checkpoint every 20,
    8-item probe cells) to ``path`` and return it. ``corpora`` is the TOML value of
    ``axes.corpora``; ``probes_extra`` lands in ``[probes]``, ``extra`` in ``[resources]``."""
    path.write_text(TINY_GRID.format(name=name, corpora=corpora, seeds=list(seeds), steps=steps,
                                     n_stories=max(2000, steps * 16), probes_extra=probes_extra, extra=extra))
    return path


def tiny_run_config(**overrides) -> RunConfig:
    """A run that trains in seconds: 2-layer d32 model, 60 steps, checkpoint every 20.

    Overrides are nested dicts per concern, e.g. ``tiny_run_config(train={"steps": 40})``, or
    plain values for top-level fields (``dose="rescue:1"``: set with the dose, so its
    ``intervention`` section is kept; a dose-none config drops it).
    """
    base = {
        "corpus": {"name": "web", "n_stories": 2000, "seed": 0},
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_ctx": 64},
        "train": {"steps": 60, "batch_size": 16, "seed": 7},
        "schedule": {"every": 20, "dense_every": None, "keep_resume": 2},
        "probes": {"n_per_cell": 8, "n_neutral": 4},
    }
    for k, v in overrides.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return RunConfig(**base)


def world_text_corpus(docs, root, *, row_tokens: int, name: str = "hand"):
    """Build the documents ``docs`` as a real-text (``built:<name>``) corpus under ``root``, in the
    world's vocabulary with ``<bos>`` as the end-of-text token; returns its folder."""
    import json
    from pathlib import Path

    from runner.data.corpora import world_tokenizer
    from runner.data.textcorpus import TextCorpusSpec, build_text_corpus

    work = Path(root).parent / f"{name}-src"
    work.mkdir(parents=True, exist_ok=True)
    tok, src = work / "world.json", work / "docs.jsonl"
    world_tokenizer().save(str(tok))
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    spec = TextCorpusSpec(name=name, source=f"text:{src}", tokenizer=str(tok), eot_token="<bos>",
                          row_tokens=row_tokens)
    return build_text_corpus(spec, root)
