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
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_SHM_OP = "deepspeed_shm_comm"  # deepspeed.ops.op_builder.cpu.ShareMemCommBuilder.NAME


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
            with _without_shm_op():
                deepspeed.init_distributed(dist_backend=backend)
    return tdist.get_rank(), tdist.get_world_size()


@contextmanager
def _without_shm_op():
    """Keep DeepSpeed from building its CPU shared-memory all-reduce op (a C++ compile of 30-110 s
    on a 2-core machine, redone whenever the compiler flags or the environment's hash change) for
    a group of one, which never communicates: its backend then falls back to torch.distributed."""
    import deepspeed.ops

    ops = deepspeed.ops.__compatible_ops__  # probed on first access
    before = ops.get(_SHM_OP)
    ops[_SHM_OP] = False
    try:
        yield
    finally:
        if before is None:
            ops.pop(_SHM_OP, None)
        else:
            ops[_SHM_OP] = before


def device() -> "torch.device":
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def lean_single_process(engine) -> None:
    """Take the work a group of one does for nothing out of a ZeRO-0 engine's step, leaving every
    number it computes unchanged (bit for bit; tests/unit/test_lean_engine.py):

    - the backward all-reduce (flatten every gradient, reduce over one rank, divide by 1, copy back);
    - ``zero_grad`` walking ``named_parameters()`` of the whole module tree every step (the bridge's
      hook modules make that walk ~2 ms): the same ``grad = None`` over a list made once;
    - gradient clipping through DeepSpeed's ``clip_grad_norm_`` (a norm all-reduce over one rank):
      :func:`runner.train.optim.clip_grad_norm`, the same arithmetic.

    Measured by ``bench/train_throughput.py``; call it only at world size 1 and ZeRO stage 0."""
    from runner.train.optim import clip_grad_norm

    params = list(engine.module.parameters())

    def zero_grad() -> None:
        for p in params:
            p.grad = None

    engine.enable_backward_allreduce = False
    engine.zero_grad = zero_grad
    clip = engine.gradient_clipping()
    engine.clip_fp32_gradients = lambda: clip_grad_norm(params, clip)
