"""Process-group set-up for DeepSpeed with or without a launcher.

Under the ``deepspeed`` launcher (or Ray Train) RANK/WORLD_SIZE/MASTER_* are already set. A
plain ``ungrok train`` makes a one-process group over an in-memory store: nothing listens for a
rendezvous (only gloo's own socket, on 127.0.0.1), and two runs side by side never collide on a
port.
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


def _loopback_ifname() -> str:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [n for _, n in socket.if_nameindex()]
    return next((n for n in ("lo", "lo0") if n in names), "lo")


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
            # Single process: an in-memory store, no rendezvous server (torch's TCPStore listens
            # on every interface), no RANK/MASTER_* for child processes to inherit; DeepSpeed
            # adopts the group.
            os.environ["LOCAL_RANK"] = os.environ.get("LOCAL_RANK", "0")
            # gloo's socket on the loopback interface, not the one the host name resolves to
            ifname = {} if "GLOO_SOCKET_IFNAME" in os.environ else {"GLOO_SOCKET_IFNAME": _loopback_ifname()}
            os.environ.update(ifname)
            try:
                store = tdist.HashStore()  # pyright: ignore[reportPrivateImportUsage]
                tdist.init_process_group(backend, store=store, rank=0, world_size=1)
            finally:
                for k in ifname:
                    os.environ.pop(k, None)
            deepspeed.init_distributed(dist_backend=backend)
    return tdist.get_rank(), tdist.get_world_size()


def device() -> "torch.device":
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
