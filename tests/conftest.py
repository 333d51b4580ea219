"""Shared helpers: tiny configs, seeded RNGs, a built tiny corpus."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Keep every Ray process of the tests on loopback: with this, Ray stops rewriting 127.0.0.1 to the
# machine's other interface (services.get_node_ip_address), for `ray start` and drivers alike.
# Inherited by the subprocesses the tests start.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from runner.config import RunConfig  # noqa: E402

REFERENCE_BATTERY = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "batteries",
                                 "rvp4.jsonl")


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

    Overrides are nested dicts per concern, e.g. ``tiny_run_config(train={"steps": 40})``.
    """
    base = {
        "corpus": {"name": "web", "n_stories": 2000, "seed": 0},
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_ctx": 64},
        "train": {"steps": 60, "batch_size": 16, "seed": 7},
        "schedule": {"every": 20, "dense_every": None, "keep_resume": 2},
        "probes": {"n_per_cell": 8, "n_neutral": 4},
    }
    for k, v in overrides.items():
        base[k] = {**base.get(k, {}), **v}
    return RunConfig(**base)


@pytest.fixture(autouse=True)
def _no_leaked_rendezvous():
    """A library that writes the process-group rendezvous variables (accelerate sets RANK,
    WORLD_SIZE, MASTER_* when it finds the process group an earlier in-process run made) must not
    leak them into later tests and the subprocesses and Ray workers they start (which would then
    take themselves for ranks of a launcher). LOCAL_RANK stays: DeepSpeed reads it in-process."""
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture
def reference_battery() -> str:
    path = os.path.abspath(REFERENCE_BATTERY)
    if not os.path.exists(path):
        pytest.skip(f"reference battery not found at {path} (shared/ is checked out beside the repo)")
    return path


@pytest.fixture
def local_ray():
    """A real local Ray (2 CPUs, loopback) for one test, shut down after it."""
    import ray

    from cluster.sweep import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()
