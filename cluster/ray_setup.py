"""Connecting to Ray: a local in-process Ray or an existing cluster (on loopback where local),
token authentication as Ray's own CLI does it, the per-run resource check, and submitting a sweep
as a Ray job (Jobs API)."""

from __future__ import annotations

import ipaddress
import os
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

from runner.grid import GridError, GridSpec, load_grid


def _is_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"ray://{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False,
             node_ip: str | None = None):
    """Connect to ``address`` or start a local Ray in-process, on loopback.

    ``node_ip``: the driver's node address; default 127.0.0.1 for a local Ray or a loopback
    ``address`` (a default start can pick another interface and hang), ``UNGROK_NODE_IP`` if set.
    Dashboard and servers bind 127.0.0.1. Ray's token authentication stays as Ray defaults it (on).
    """
    if num_cpus is not None and num_cpus < 1:
        raise GridError(f"--num-cpus {num_cpus}: the local Ray needs at least 1 CPU (leave it out for all)")
    node_ip = node_ip or os.environ.get("UNGROK_NODE_IP")
    if address is None and (node_ip is None or _is_loopback(node_ip)):
        _loopback_only()
    import ray

    if address is None:
        # address="local": always a new in-process Ray, never a `ray start` cluster found on the machine
        return ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                        _node_ip_address=node_ip or "127.0.0.1", log_to_driver=False,
                        object_store_memory=256 * 1024**2)
    if node_ip is None and _is_loopback(address):
        node_ip = "127.0.0.1"
    kw = {"_node_ip_address": node_ip} if node_ip else {}
    check_reachable(address, "cluster")  # Ray itself retries a dead address for minutes
    _present_token()
    try:
        return ray.init(address=address, log_to_driver=False, **kw)
    except ConnectionError as e:
        raise ClusterUnreachable(f"no Ray cluster at --address {address} ({one_line(e)[:200]}); start one "
                                 "(ray start --head) or leave --address out for a local Ray") from None


def _resolve_auto() -> str:
    """The cluster ``--address auto`` means (RAY_ADDRESS, else the one this machine last started,
    which may be long dead), as Ray resolves it; ClusterUnreachable when there is none."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # another Ray version: leave it to ray.init
        return "auto"
    try:
        return canonicalize_bootstrap_address("auto") or "auto"
    except (ConnectionError, ValueError) as e:
        raise ClusterUnreachable(f"--address auto: {one_line(e)[:200]}") from None


class ClusterUnreachable(RuntimeError):
    """No Ray cluster (or Jobs API) answers at the address given; nothing was started."""


def one_line(e: object) -> str:
    return " ".join(str(e).split())


def check_reachable(address: str, what: str = "cluster", timeout: float = 5.0) -> None:
    """Refuse, within ``timeout`` seconds, an address (``host:port``, ``ray://``, ``http://``) where
    nothing accepts a connection; ``auto`` is left to Ray (it fails fast when no cluster runs)."""
    import socket

    if address == "auto":
        address = _resolve_auto()
    u = urlparse(address if "://" in address else f"ray://{address}")
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    if not u.hostname or not port:
        return
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ClusterUnreachable(f"no Ray {what} answers at {address} ({why}); check the address, start the "
                                 "cluster (ray start --head), or leave --address out for a local Ray") from None


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only() -> None:
    """Keep a local Ray on 127.0.0.1: unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is set (to
    "0", or to "1" by a user who wants Ray's cluster mode), set it to "0" for the processes Ray
    starts (gcs, raylet, agents, workers bind loopback only; without it they listen on every
    interface) and, if Ray is imported already, in its loaded constants."""
    import sys

    if os.environ.get(LOOPBACK_ENV, "0") != "0":
        return
    os.environ[LOOPBACK_ENV] = "0"
    consts = sys.modules.get("ray._private.ray_constants")
    if consts is not None:
        consts.ENABLE_RAY_CLUSTER = False


def _present_token() -> None:
    """Keep token authentication on when connecting to an existing cluster: Ray 2.60 turns it on
    for a driver only if RAY_AUTH_MODE says so when its config is initialised, so with the mode
    unset and a token on this machine (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN) we
    enable it the way Ray's own CLI does (environment and the already-loaded config)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: the environment alone
        token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def check_resources(spec: GridSpec) -> None:
    """Refuse, before any job starts, a per-run request that no alive node can satisfy."""
    import ray

    r = spec.resources
    need = {"CPU": r.num_cpus, **({"GPU": r.num_gpus} if r.num_gpus else {}), **r.custom}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(all(res.get(k, 0) >= v for k, v in need.items()) for res in nodes):
        return
    field = {"CPU": "resources.num_cpus", "GPU": "resources.num_gpus"}
    for k, v in need.items():
        best = max((res.get(k, 0) for res in nodes), default=0)
        if best < v:
            raise GridError(f"{field.get(k, 'resources.custom.' + k)} = {v}: no node in the cluster has it "
                            f"(largest {k} on a node: {best:g}); lower the request or add nodes")
    raise GridError(f"resources {need}: no single node has all of them at once; lower the request")


def _submit_job(client, entry: str, wd: Path) -> str:
    for attempt in range(60):  # a freshly started head may not have its job agent up yet
        try:
            return client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(wd)})
        except RuntimeError as e:
            if "No available agent" not in str(e) or attempt == 59:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def submit(spec_file: str | Path, address: str, out: str | Path, follow: bool = True, log=print,
           timeout: float | None = None) -> tuple[str, str]:
    """Submit ``ungrok sweep`` as a Ray job (Jobs API); returns (job id, final status or 'SUBMITTED').

    The spec travels in the job's working_dir; ``out`` must be a path the cluster can write
    (a shared filesystem). With ``follow`` the job's logs are printed until it ends.
    """
    import shutil
    import tempfile

    from ray.job_submission import JobStatus, JobSubmissionClient

    load_grid(spec_file)  # refuse a bad spec before anything is submitted
    check_reachable(address, "Jobs API")
    _present_token()
    try:
        client = JobSubmissionClient(address)
    except ConnectionError as e:
        raise ClusterUnreachable(f"no Ray Jobs API at --address {address} ({one_line(e)[:200]}); pass the "
                                 "head's dashboard address, e.g. http://HEAD:8265") from None
    # the path is quoted: the entrypoint runs in a shell on the cluster
    entry = f"ungrok sweep grid.toml --address auto --out {shlex.quote(str(Path(out).resolve()))} --no-progress"
    if _is_loopback(address):
        entry += " --node-ip-address 127.0.0.1"
    wd = Path(tempfile.mkdtemp(prefix="ungrok-job-"))
    try:  # submit_job uploads the working_dir: the local copy goes right after
        shutil.copy(spec_file, wd / "grid.toml")
        job_id = _submit_job(client, entry, wd)
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    log(f"submitted job {job_id}: {entry}")
    if not follow:
        return job_id, "SUBMITTED"
    seen, t0 = 0, time.time()
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > seen:
            log(logs[seen:].rstrip())
            seen = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return job_id, str(status.value if hasattr(status, "value") else status)
        if timeout and time.time() - t0 > timeout:
            return job_id, "TIMEOUT"
        time.sleep(1.0)
