"""A warm forkserver for the CPU workers of ``ungrok sweep --executor processes``: each cell's
process is a fork of an interpreter that has already imported torch, transformer_lens, DeepSpeed
and ungrok's trainer, so it pays none of those imports (about 9 s of a cell's 10 s fixed cost on
2 cores) and still runs exactly one cell in a process of its own.

Driver side, :func:`warm_context`: multiprocessing keeps one forkserver per driver process,
started on first use, which imports the modules named by ``set_forkserver_preload`` before it
forks anything and inherits the driver's environment as it is at that moment. So this names
itself as the one module to preload and starts the server with ``CUDA_VISIBLE_DEVICES=""`` and a
mark (``UNGROK_FORKSERVER=<driver pid>``) in the environment, then restores the driver's own
environment. A server that someone else in this process started first (with other modules and
environment) is left alone: the caller gets ``None`` and keeps ``spawn``.

Server side, this module imported with the mark (:func:`_warm`):

1. Arms ``PR_SET_PDEATHSIG`` (SIGKILL): the server dies with the driver thread that started it
   (the thread that runs the sweep, which outlives the sweep's pools).
   Without it a killed driver would leave the server and its cells running, because every worker
   holds the write end of the server's "alive" pipe (the server only exits at EOF on it, i.e.
   after its last worker). Each worker arms its own parent-death signal against the server (the
   setting is cleared by ``fork``), so: driver dies -> server dies -> workers die.
2. Hides CUDA for good: a process that initialised CUDA must never fork workers that use it, and
   the server's children are the CPU workers only (GPU workers stay on ``spawn``). If torch was
   already imported or CUDA is not hidden, it stays cold (imports nothing; workers import).
3. Imports the trainer's modules with stdout/stderr on /dev/null (DeepSpeed's accelerator notice
   would land on the driver's terminal) and records :data:`REPORT`: seconds per import, the
   server's pid, its Python and native threads. A forked worker inherits ``REPORT``.

Fork safety: these imports start no Python thread (``threading.active_count() == 1``, recorded and
tested) and never run a torch op, so torch's intra-op pool (started lazily) does not exist. The
native threads they start are numpy's and scipy's OpenBLAS pools, which OpenBLAS shuts down before
each fork (``pthread_atfork``), and pyarrow's jemalloc background thread, which arrow's fork
handlers cover (seen: after its first fork the server has its main thread and jemalloc's); a
forked child has one thread. The
cell then sets its own thread count (``train.threads``) and seeds, so it trains bit-identically to
a spawned worker (tested on the stored arrays).

Imported without the mark (the driver, a test, a spawned worker) this module does nothing; in a
forkserver that multiprocessing restarted by itself, it only arms the parent-death signal.
"""

from __future__ import annotations

import os
import sys
import threading
import time

MARK = "UNGROK_FORKSERVER"
# What a cell imports, in order; the last four a cell imports late (the first model build, the
# engine), found by measurement (``cluster.fixed_cost``'s ``late_imports``).
MODULES = ("torch", "transformer_lens", "deepspeed", "runner.train", "runner.train.loop", "runner.model",
           "runner.data.streams", "cluster.cell", "cluster.sweep_local", "transformer_lens.model_bridge",
           "deepspeed.ops.op_builder.all_ops", "deepspeed.module_inject.auto_ep_config", "distutils.ccompiler")
REPORT: dict = {}  # filled in the server only; a forked worker inherits it
_started: dict = {}  # driver side: the forkserver pid this module started, if any


def _arm_parent_death(parent: int) -> None:
    """SIGKILL this process when the thread that started it ends (Linux); exit now if the
    parent is already gone (the signal would never come)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)


def _threads() -> list[str]:
    """This process's native threads by name (Linux; empty elsewhere)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    names = []
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


def _warm(parent: int) -> None:
    """The server's preload (see the module docstring): parent-death signal, then :func:`preload`."""
    _arm_parent_death(parent)
    preload()


def preload() -> None:
    """CUDA check, the imports of :data:`MODULES` with their output discarded, and :data:`REPORT`
    (also the preload of :mod:`cluster.zygote`'s per-node server)."""
    if "torch" in sys.modules or os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        REPORT.update(pid=os.getpid(), warm=False)
        return
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        for name in MODULES:
            t = time.perf_counter()
            try:
                __import__(name)
            except Exception as e:  # a worker that needs it meets (and reports) the error itself
                failed[name] = f"{type(e).__name__}: {e}"
            seconds[name] = round(time.perf_counter() - t, 3)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
    torch = sys.modules.get("torch")
    REPORT.update(pid=os.getpid(), warm="torch" not in failed, seconds=seconds, failed=failed,
                  cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                  cuda_initialized=bool(torch and torch.cuda.is_initialized()),
                  python_threads=threading.active_count(), native_threads=_threads())


def server_report() -> dict:
    """:data:`REPORT` as this process has it: the warm server's, in a worker forked from it;
    empty in the driver or a spawned worker."""
    return dict(REPORT)


def warm_context(log=print):
    """The forkserver context for CPU workers, its server started warm (see the module docstring),
    or ``None`` where there is none to be had: not Linux, or a forkserver that this module did not
    start already runs in this process (then the caller keeps ``spawn`` and says so)."""
    import multiprocessing as mp
    from multiprocessing import forkserver, resource_tracker

    if not sys.platform.startswith("linux"):
        return None
    server = forkserver._forkserver  # multiprocessing's one server per process
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None and pid != _started.get("pid"):
        log(f"the forkserver of this process (pid {pid}) was not started warm here (another user, or a restart "
            "after the warm one died): CPU workers start by spawn")
        return None
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    resource_tracker.ensure_running()  # started with the driver's own environment
    before = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", MARK)}
    os.environ.update({"CUDA_VISIBLE_DEVICES": "", MARK: str(os.getpid())})
    try:
        server.ensure_running()  # a no-op while our server lives; restarts it (warm) if it died
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _started["pid"] = getattr(server, "_forkserver_pid", None)
    return ctx


def _in_forkserver() -> bool:
    """Whether this import is a forkserver's preload (``multiprocessing.forkserver.main`` is on
    the stack)."""
    server = sys.modules.get("multiprocessing.forkserver")
    frame = sys._getframe()
    while server is not None and frame is not None:
        if frame.f_code is server.main.__code__:
            return True
        frame = frame.f_back
    return False


def _on_import() -> None:
    """Warm up if this import is the marked forkserver's preload; drop the mark either way, so
    no worker inherits it. A forkserver that multiprocessing restarted on its own (the first one
    died; it has the driver's environment, CUDA included) stays cold but still dies with its
    parent, so its workers die with the driver too."""
    mark = os.environ.pop(MARK, None)
    if mark and mark.isdigit():
        _warm(int(mark))
    elif _in_forkserver():
        REPORT.update(pid=os.getpid(), warm=False)
        _arm_parent_death(os.getppid())


_on_import()
