"""Process-group set-up for DeepSpeed with or without a launcher.

Under the ``deepspeed`` launcher (or Ray Train) RANK/WORLD_SIZE/MASTER_* are already set. A
plain ``ungrok train`` sets them for a single process with a free loopback port, so two runs
side by side never collide on MASTER_PORT.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "RANK" in os.environ:  # a launcher (deepspeed, torchrun, Ray Train) set the group up
            deepspeed.init_distributed(dist_backend=backend)
        else:
            # Single process: set the rendezvous variables for the call only, so that child
            # processes (a subprocess run, a Ray worker) never inherit this process's port.
            mine = dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
            os.environ.update(mine, LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"))
            try:
                deepspeed.init_distributed(dist_backend=backend)
            finally:
                for k in mine:
                    os.environ.pop(k, None)
    return tdist.get_rank(), tdist.get_world_size()


def device() -> "torch.device":
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
