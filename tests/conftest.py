"""Fixtures shared by every test (offline hub variables, seeded RNGs, a local Ray).

Plain helpers (tiny configs and grid specs) live in :mod:`tests.helpers`: import them from there,
not from this file.
"""

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
# A developer's project prereg (the CLI's default --prereg) must not seal the tests' seeds.
os.environ.pop("UNGROK_PREREG", None)

from tests.helpers import REFERENCE_BATTERY  # noqa: E402  (after the offline variables)


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
