"""Process-group set-up for DeepSpeed with or without a launcher.

Under the ``deepspeed`` launcher (or Ray Train) RANK/WORLD_SIZE/MASTER_* are already set. A
plain ``ungrok train`` sets them for a single process with a free loopback port, so two runs
side by side never collide on MASTER_PORT.
"""

from __future__ import annotations

import logging
import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_process_group() -> tuple[int, int]:
    """Initialise torch.distributed once per process; returns (rank, world_size)."""
    import torch
    import torch.distributed as tdist

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    import deepspeed

    if not tdist.is_initialized():
        if "RANK" not in os.environ:
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(free_port()))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend)
    return tdist.get_rank(), tdist.get_world_size()


def device() -> "torch.device":
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
