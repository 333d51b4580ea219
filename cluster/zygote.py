"""Warm starts for Ray's CPU cells: a per-node server that has imported torch, transformer_lens,
DeepSpeed and the trainer once, and forks one process per cell.

Why: a Ray cell runs in a fresh worker (``max_calls=1``: DeepSpeed's process group and its port
die with the process), and a fresh worker paid ~7-10 s of imports before its first step (most of
it ``transformer_lens``' own imports: ``bench/RESULTS.md``). Here the Ray task stays the cell's
unit of scheduling, retry and resources, but the training runs in a fork of a warm interpreter,
still one process per cell, as ``ungrok sweep --executor processes`` does with
:mod:`cluster.preload`'s forkserver.

How:

1. The driver starts one :class:`Zygote` actor per alive node with CPUs (``num_cpus=0``, pinned to
   its node), which starts the server (``python -m cluster.zygote ADDRESS PARENT_PID``) in a clean
   interpreter: the imports of :data:`cluster.preload.MODULES` with CUDA hidden and their output
   discarded (:func:`cluster.preload.preload`), then it listens on a Linux abstract Unix socket
   (no file to leave behind) and says ``ready``. The driver waits for that after building the
   streams (the imports run meanwhile), before it submits a cell.
2. A cell's Ray task (:func:`run_warm`) connects to its node's server (with none, it returns None
   and the task trains in-process, as before) and sends the cell with its environment, working
   directory and stdout/stderr (the descriptors themselves, so the cell's output lands in the
   task's Ray log). The server forks only for a peer of its own user (``SO_PEERCRED``); the child
   restores the task's environment, runs :func:`cluster.cell.train_cell` and sends back its result
   or its traceback.
3. One connection ties the two processes' lives: the child reads it on a thread and exits at once
   when it closes (the task was killed: Ray's retry finds the run folder free); the task reads it
   for the result, and when it closes with none (the child was killed) the task SIGKILLs itself,
   which Ray sees as the worker dying, as when the cell ran in it, and retries (``max_retries``).
4. The server exits when its actor's process is gone (the driver ended the sweep or died); the
   children exit with their tasks. GPU cells and Ray Train cells never use it (CUDA state is
   never forked).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback

WAIT_FOR_START = 180.0  # seconds the driver waits for a server to finish importing
_MAX_REQUEST = 1 << 22


def socket_address(token: str, node_id: str) -> str:
    """Where the server of ``node_id`` for the sweep run ``token`` listens: a Linux abstract
    Unix socket (no file to leave behind; it goes with the server's last descriptor)."""
    return f"\0ungrok-zygote-{os.getuid()}-{token[:16]}-{node_id[:16]}"


# ---- the server -------------------------------------------------------------------------------


def serve(address: str, parent: int) -> None:
    """Preload, listen at ``address``, say ``ready`` on stdout, then fork a child per connection
    from a process of this user until ``parent`` is gone."""
    from cluster import preload

    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    preload.preload()  # the imports (output discarded), preload.REPORT; the loop below watches the parent
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    listener.settimeout(1.0)
    os.write(1, b"ready\n")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            continue
        if _peer_uid(conn) == os.getuid() and os.fork() == 0:
            listener.close()
            _child(conn)  # never returns
        conn.close()


def _peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of ``conn`` (SO_PEERCRED: pid, uid, gid)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _child(conn: socket.socket) -> None:
    """One cell in a fork of the server: the task's environment, folder and output; the result
    (or the traceback) back on ``conn``; exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the cell's own subprocesses are waited for
    code = 1
    try:
        conn.settimeout(None)
        msg, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 2)
        while not msg.endswith(b"\n"):  # a stream socket may deliver the request in parts
            part = conn.recv(_MAX_REQUEST)
            if not part:
                return
            msg += part
        req = json.loads(msg)
        for fd, target in zip(fds, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        threading.Thread(target=_exit_when_closed, args=(conn,), daemon=True).start()
        try:
            module, _, name = req["target"].partition(":")
            reply = {"result": getattr(importlib.import_module(module), name)(*req["args"], **req["kwargs"])}
        except BaseException:  # the cell's error goes to the task, which raises it in Ray
            reply = {"error": traceback.format_exc()}
        conn.sendall(json.dumps(reply).encode() + b"\n")
        code = 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _exit_when_closed(conn: socket.socket) -> None:
    """Exit this process as soon as the task's end of ``conn`` closes (the task died)."""
    try:
        conn.recv(1)
    except OSError:
        pass
    os._exit(1)


# ---- the task's side ----------------------------------------------------------------------------


def _connect(address: str) -> socket.socket | None:
    """A connection to the server at ``address``; None if none listens there."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(address)
        return s
    except OSError:
        s.close()
        return None


def cell_task(cfg_json: str, sweep_dir: str, addresses: dict[str, str] | None) -> dict:
    """A sweep cell's Ray task body, light to import (this module, the standard library, ray): the
    cell in a fork of its node's warm server (``addresses``: node id -> address), or, with none,
    :func:`cluster.cell.train_cell` in this worker."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    warm = run_warm(addresses.get(node) if addresses else None, cfg_json, sweep_dir, node)
    if warm is not None:
        return warm
    from cluster.cell import train_cell

    return train_cell(cfg_json, sweep_dir, node)


def run_warm(address: str | None, cfg_json: str, sweep_dir: str, node_id: str) -> dict | None:
    """Train the cell in a fork of the server at ``address`` (:func:`cluster.cell.train_cell`);
    its result, or None when no server serves this node (the caller trains in-process)."""
    return call_warm(address, "cluster.cell:train_cell", [cfg_json, sweep_dir, node_id], {"start": "warm fork"})


def call_warm(address: str | None, target: str, args: list, kwargs: dict | None = None) -> dict | None:
    """``module:function`` ``target`` called with ``args``/``kwargs`` (JSON) in a fork of the
    server at ``address``; its result (a dict), or None when none listens there. An error there
    raises :class:`CellFailed` with its traceback; a fork that died without a reply takes this
    process with it (SIGKILL: Ray retries the task as it would a killed worker)."""
    if not address:
        return None
    conn = _connect(address)
    if conn is None:
        return None
    with conn:
        sys.stdout.flush()
        sys.stderr.flush()
        req = {"target": target, "args": args, "kwargs": kwargs or {}, "env": dict(os.environ), "cwd": os.getcwd()}
        socket.send_fds(conn, [json.dumps(req).encode() + b"\n"], [1, 2])
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1 << 16)
            if not chunk:
                print(f"ungrok: the cell's process (a fork of {address[1:]}) died without a reply; ending this "
                      "worker so that Ray retries the cell", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            data += chunk
    reply = json.loads(data)
    if "error" in reply:
        raise CellFailed(reply["error"])
    return reply["result"]


class CellFailed(RuntimeError):
    """A cell raised in its warm fork; the message is its traceback there."""


# ---- the driver's side --------------------------------------------------------------------------


class Zygote:
    """The Ray actor that owns one node's server process (see the module docstring)."""

    def __init__(self, address: str) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-m", "cluster.zygote", address.lstrip("\0"), str(os.getpid())],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    def ready(self, timeout: float = WAIT_FOR_START) -> bool:
        """Whether the server finished its imports and listens (waits up to ``timeout`` seconds)."""
        import select

        out = self.proc.stdout
        assert out is not None
        if not select.select([out], [], [], timeout)[0]:
            return False
        return out.readline() == b"ready\n"


def start_zygotes() -> tuple[dict[str, str], list]:
    """One :class:`Zygote` per alive node with CPUs, their addresses named by a token of this
    call (so two sweeps never share a server); returns ``({node_id: address}, actors)``.
    The actors live as long as the caller holds them (``ray.kill`` them when the sweep ends).
    None off Linux (abstract sockets and ``SO_PEERCRED`` are Linux's): cells train in-process."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    addresses, actors, token = {}, [], uuid.uuid4().hex
    if not sys.platform.startswith("linux"):
        return addresses, actors
    for node in ray.nodes():
        if not node.get("Alive") or not node.get("Resources", {}).get("CPU"):
            continue
        nid = node["NodeID"]
        addresses[nid] = socket_address(token, nid)
        strategy = NodeAffinitySchedulingStrategy(nid, soft=False)
        actors.append(ray.remote(Zygote).options(num_cpus=0, scheduling_strategy=strategy).remote(addresses[nid]))
    return addresses, actors


def ready_servers(addresses: dict[str, str], actors: list) -> dict[str, str]:
    """The addresses of the servers that are ready (waiting for each); a node whose server
    failed to start is left out, and its cells train in-process."""
    import ray
    from ray.exceptions import RayError

    def ok(ref) -> bool:
        try:
            return bool(ray.get(ref))
        except RayError:  # the actor could not start its server
            return False

    refs = [a.ready.remote() for a in actors]
    return {nid: addr for (nid, addr), ref in zip(addresses.items(), refs) if ok(ref)}


if __name__ == "__main__":
    serve("\0" + sys.argv[1], int(sys.argv[2]))  # the name has no NUL on the command line
