"""Sweeps on Ray: one Ray task per grid cell, packed onto nodes by their resource requests.

Layout of a sweep folder (a shared filesystem path when the cluster has several nodes)::

    <sweep>/grid.toml        the spec as given        <sweep>/manifest.json   cells, run ids, states, errors
    <sweep>/corpora/         corpora, built once per corpus config and shared by seeds
    <sweep>/runs/<run_id>/   config, weights, DeepSpeed checkpoints, attempts.jsonl (node id, pid per attempt)
    <sweep>/store.zarr       one zarr store; run <id> writes only the group runs/<id> (no shared chunks);
                             metadata is consolidated by the driver once every writer has finished

Each cell runs in a fresh worker process (``max_calls=1``: DeepSpeed's process group and its
port die with the process); the driver holds no weights. A worker killed mid-run is retried by
Ray (``resources.max_retries``) and the retry resumes from the run's last DeepSpeed checkpoint. An
application error is recorded per cell with its traceback and reported, never swallowed. Running
the same sweep again skips complete cells and resumes unfinished ones.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import time
import traceback
from pathlib import Path
from urllib.parse import urlparse

from runner._io import write_json_atomic
from runner.grid import GridError, GridSpec, load_grid
from runner.store import group_complete


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
    import ray

    node_ip = node_ip or os.environ.get("UNGROK_NODE_IP")
    if address is None:
        # address="local": always a new in-process Ray, never a `ray start` cluster found on the machine
        return ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                        _node_ip_address=node_ip or "127.0.0.1", log_to_driver=False,
                        object_store_memory=256 * 1024**2)
    if node_ip is None and _is_loopback(address):
        node_ip = "127.0.0.1"
    kw = {"_node_ip_address": node_ip} if node_ip else {}
    _present_token()
    return ray.init(address=address, log_to_driver=False, **kw)


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


def _train_cell(cfg_json: str, sweep_dir: str) -> dict:
    """The Ray task body: train (or resume) one cell; append this attempt to attempts.jsonl."""
    import ray
    import torch

    from runner.config import RunConfig
    from runner.train import train_run

    cfg = RunConfig.model_validate_json(cfg_json)
    sweep = Path(sweep_dir)
    run_dir = sweep / "runs" / cfg.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = ray.get_runtime_context()
    attempt = {"node_id": ctx.get_node_id(), "pid": os.getpid(), "started_utc": _now()}
    with open(run_dir / "attempts.jsonl", "a") as f:
        f.write(json.dumps(attempt) + "\n")
    t0 = time.time()
    torch.set_num_threads(cfg.train.threads)
    train_run(cfg, sweep / "runs", progress=False, corpora_dir=sweep / "corpora",
              store_root=sweep / "store.zarr", log=lambda *a: None)
    return {**attempt, "run_id": cfg.run_id, "seconds": time.time() - t0}


def _build_stream(cfg_json: str, sweep_dir: str) -> str:
    """The Ray task that builds a cell's corpus and intervened stream (shared by its seeds)."""
    from runner.config import RunConfig
    from runner.data.streams import build_streams

    base, dosed = build_streams(RunConfig.model_validate_json(cfg_json), Path(sweep_dir) / "corpora")
    return str(dosed or base)


def stream_key(cfg) -> str:
    """Cells with equal keys train on the same stream (corpus, dose, intervention families, seed)."""
    iv = (list(cfg.dose_families), cfg.intervention.seed) if cfg.dose != "none" else None
    return json.dumps([cfg.corpus.model_dump(mode="json"), cfg.dose, iv], sort_keys=True)


def build_streams_first(cells, sweep_dir: Path, opts: dict, log=print) -> dict[str, str]:
    """Build every stream the cells need, once each, in parallel Ray tasks, before any training.

    An intervention that cannot be applied (a disjointness-gate violation, an impossible dose)
    stops the sweep here with :class:`StreamError` naming the stream, before any cell starts.
    Any other build error (e.g. a missing dataset) fails just the cells of that stream: returns
    ``{run_id: traceback}`` for them, and they are not started."""
    import ray

    from interventions import InterventionError

    firsts: dict[str, object] = {}
    for c in cells:
        firsts.setdefault(stream_key(c.config), c)
    refs = {ray.remote(_build_stream).options(**opts).remote(c.config.model_dump_json(), str(sweep_dir)): k
            for k, c in firsts.items()}
    if refs:
        log(f"building {len(refs)} stream(s) before training")
    broken: dict[str, str] = {}
    for ref, key in refs.items():
        try:
            ray.get(ref)
        except Exception as e:  # the task's own error (RayTaskError wraps it)
            cause = getattr(e, "cause", None) or e
            c = firsts[key]
            if isinstance(cause, InterventionError):
                raise StreamError(f"stream of {c.corpus} / {c.dose}: {type(cause).__name__}: {cause}") from None
            broken[key] = "".join(traceback.format_exception(e))[-4000:]
    return {c.run_id: broken[stream_key(c.config)] for c in cells if stream_key(c.config) in broken}


class StreamError(RuntimeError):
    """A stream (corpus or intervened stream) could not be built; no cell was started."""


def _train_cell_multi(cfg_json: str, sweep_dir: str, n_workers: int, use_gpu: bool, cpus: float) -> dict:
    """A cell with > 1 GPU: DeepSpeed under Ray Train's TorchTrainer (one rank per GPU)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    def loop(_config):
        _train_cell(cfg_json, sweep_dir)

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=n_workers, use_gpu=use_gpu,
                                                              resources_per_worker={"CPU": cpus}),
                           torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"))
    from runner.config import RunConfig

    t0 = time.time()
    trainer.fit()
    return {"run_id": RunConfig.model_validate_json(cfg_json).run_id, "seconds": time.time() - t0,
            "node_id": "ray-train", "pid": os.getpid()}


class Sweep:
    """A sweep folder: its spec, manifest and cells."""

    def __init__(self, sweep_dir: str | Path, spec: GridSpec | None = None) -> None:
        self.dir = Path(sweep_dir)
        if spec is None:
            spec = load_grid(self.dir / "grid.toml")
        self.spec = spec
        self.cells = spec.cells()

    @property
    def store_path(self) -> Path:
        return self.dir / "store.zarr"

    def manifest(self) -> dict:
        p = self.dir / "manifest.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def write_manifest(self, states: dict[str, dict], last_run: dict | None = None) -> None:
        """Write the manifest; ``last_run`` (wall time, efficiency ... of the latest finished
        ``run_sweep``) is kept from the previous manifest unless a new one is given."""
        data = {
            "name": self.spec.name, "spec": self.spec.model_dump(mode="json"), "updated_utc": _now(),
            "cells": [{"label": c.label, "run_id": c.run_id, "corpus": c.corpus, "budget": c.budget, "dose": c.dose,
                       "seed": c.seed, **states.get(c.run_id, {"state": "pending"})} for c in self.cells],
        }
        last_run = last_run or self.manifest().get("last_run")
        if last_run:
            data["last_run"] = last_run
        write_json_atomic(self.dir / "manifest.json", data)

    def is_complete(self, run_id: str) -> bool:
        return group_complete(self.store_path, f"runs/{run_id}")


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a folder by hard links where the filesystem allows (else plain copies), atomically:
    into a temporary sibling, then renamed into place."""
    import shutil

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    tmp = dest.with_name(f".{dest.name}.reuse-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def reuse_complete(sw: "Sweep", sources: list[Path], log=print) -> dict[str, str]:
    """Take complete cells from other sweeps instead of recomputing them.

    A cell is taken when a source sweep holds a *complete* run with the same run id (the same
    resolved config, so the same numbers): its run folder and its store group are copied in (the
    store group last, so a copy cut short is simply not complete). Returns ``{run_id: source}``."""
    taken: dict[str, str] = {}
    for c in sw.cells:
        if sw.is_complete(c.run_id):
            continue
        for src in sources:
            src = Path(src)
            if group_complete(src / "store.zarr", f"runs/{c.run_id}") and (src / "runs" / c.run_id).is_dir():
                _copy_tree(src / "runs" / c.run_id, sw.dir / "runs" / c.run_id)
                _copy_tree(src / "store.zarr" / "runs" / c.run_id, sw.store_path / "runs" / c.run_id)
                taken[c.run_id] = str(src)
                log(f"{c.label}: complete in {src}, reused")
                break
    return taken


def prepare_sweep(spec_file: str | Path, sweep_dir: str | Path) -> Sweep:
    """Validate the spec, create the folder, the store's root groups and the manifest."""
    import zarr

    spec_file = Path(spec_file)
    spec = load_grid(spec_file)
    d = Path(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    existing = d / "grid.toml"
    if existing.exists() and load_grid(existing) != spec:
        raise GridError(f"{d} holds a sweep of a different grid spec; use another --out")
    if not existing.exists():
        tmp = d / ".grid.toml.tmp"
        tmp.write_text(spec_file.read_text())
        os.replace(tmp, existing)
    root = zarr.open_group(str(d / "store.zarr"), mode="a", use_consolidated=False)
    root.require_group("runs")
    sw = Sweep(d, spec)
    old = {c["run_id"]: c for c in sw.manifest().get("cells", [])}
    sw.write_manifest({rid: {k: v for k, v in c.items() if k in ("state", "error", "node_id", "seconds")}
                       for rid, c in old.items()})
    return sw


def run_sweep(spec_file: str | Path, sweep_dir: str | Path, *, address: str | None = None,
              num_cpus: int | None = None, progress: bool = True, dashboard: bool = False,
              node_ip: str | None = None, on_update=None, log=print, reuse: list[Path] | None = None) -> dict:
    """Run every unfinished cell of the grid on Ray; returns the sweep's final summary.

    ``summary["failed"]`` lists cells whose task raised (with tracebacks in the manifest).
    """
    import ray

    sw = prepare_sweep(spec_file, sweep_dir)
    reused = reuse_complete(sw, list(reuse or []), log)
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(address, num_cpus, dashboard, node_ip)
    t_wall = time.time()
    try:
        check_resources(sw.spec)
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
        r = sw.spec.resources
        states: dict[str, dict] = {}
        todo = []
        for c in sw.cells:
            if sw.is_complete(c.run_id):
                states[c.run_id] = {"state": "complete", "skipped": True,
                                    **({"reused_from": reused[c.run_id]} if c.run_id in reused else {})}
            else:
                todo.append(c)
        opts = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "resources": r.custom or None,
                "max_retries": r.max_retries, "retry_exceptions": False}
        unbuilt = build_streams_first(todo, sw.dir, {"num_cpus": r.num_cpus, "resources": r.custom or None,
                                                     "max_retries": r.max_retries}, log=log)
        for c in todo:
            if c.run_id in unbuilt:
                states[c.run_id] = {"state": "failed", "error": unbuilt[c.run_id]}
        todo = [c for c in todo if c.run_id not in unbuilt]
        multi = r.num_gpus > 1
        refs = {}
        for c in todo:
            if multi:
                task = ray.remote(_train_cell_multi).options(num_cpus=0, max_retries=r.max_retries)
                ref = task.remote(c.config.model_dump_json(), str(sw.dir), int(r.num_gpus), True, r.num_cpus)
            else:
                ref = ray.remote(max_calls=1)(_train_cell).options(**opts).remote(c.config.model_dump_json(), str(sw.dir))
            refs[ref] = c
            states[c.run_id] = {"state": "submitted"}
        sw.write_manifest(states)
        live = _Live(sw) if progress else None
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=2.0)
                for ref in done:
                    c = refs[ref]
                    try:
                        res = ray.get(ref)
                        states[c.run_id] = {"state": "complete", "node_id": res["node_id"],
                                            "seconds": round(res["seconds"], 2)}
                    except Exception as e:  # an application error in the task: record it, never swallow
                        tb = "".join(traceback.format_exception(e))
                        states[c.run_id] = {"state": "failed", "error": tb[-4000:]}
                    sw.write_manifest(states)
                    if on_update:
                        on_update(c, states[c.run_id])
                if live:
                    live.refresh()
        finally:
            if live:
                live.stop()
    finally:
        if started_here:
            ray.shutdown()
    import warnings

    import zarr

    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec": known
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(sw.store_path))  # every writer has finished
    wall = time.time() - t_wall
    ran = [s for s in states.values() if s.get("seconds") is not None]
    busy = sum(s["seconds"] for s in ran)
    workers = int(min(max(1.0, cluster_cpus // r.num_cpus), max(len(ran), 1)))  # cells that ran at once
    result = {
        "sweep": str(sw.dir), "cells": len(sw.cells), "ran": len(ran),
        "skipped": sum(1 for s in states.values() if s.get("skipped")),
        "failed": [c.label for c in sw.cells if states.get(c.run_id, {}).get("state") == "failed"],
        "wall_seconds": round(wall, 2), "sum_run_seconds": round(busy, 2), "workers": workers,
        "efficiency": round(busy / (workers * wall), 3) if ran else None,
    }
    sw.write_manifest(states, last_run={**result, "finished_utc": _now()})
    return result


def sweep_status(sweep_dir: str | Path) -> list[dict]:
    """One row per cell: label, run id, state, last scored step, label so far (safe while running)."""
    from runner.store import RunStore
    from runner.trajectory import family_figures

    sw = Sweep(sweep_dir)
    man = {c["run_id"]: c for c in sw.manifest().get("cells", [])}
    fam = sw.cells[0].config.probes.families[0] if sw.cells else None
    rows = []
    for c in sw.cells:
        m = man.get(c.run_id, {})
        row = {"cell": c.label, "run_id": c.run_id, "state": m.get("state", "pending"), "step": None, "label": None,
               "steps": c.config.train.steps, "error": (m.get("error") or "").strip().splitlines()[-1:] or None}
        if (sw.store_path / "runs" / c.run_id / "zarr.json").exists():
            st = RunStore(sw.store_path, f"runs/{c.run_id}")
            if st.n_complete:
                steps = st.steps()
                row["step"] = int(steps[-1])
                f = family_figures(steps, st.series(f"{fam}/acc_conflict_heldout"),
                                   st.series(f"{fam}/acc_agree_heldout"), st.series(f"{fam}/cm"))
                row["label"] = f.get("label")
                if st.attrs.get("complete"):
                    row["state"] = "complete"
                elif row["state"] in ("submitted", "pending"):
                    row["state"] = "running"  # has data but is not complete (or a driver died)
        rows.append(row)
    return rows


def status_table(sweep_dir: str | Path):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"sweep {sweep_dir}")
    for col in ("cell", "state", "step", "label", "run id"):
        t.add_column(col)
    for r in sweep_status(sweep_dir):
        step = f"{r['step']}/{r['steps']}" if r["step"] is not None else f"-/{r['steps']}"
        state = r["state"] + (f": {r['error'][0][:60]}" if r["state"] == "failed" and r["error"] else "")
        # labels like synthetic[support=0.3] are text, not rich markup
        t.add_row(escape(r["cell"]), escape(state), step, str(r["label"] or "-"), r["run_id"])
    return t


class _Live:
    def __init__(self, sw: Sweep) -> None:
        from rich.live import Live

        self.sw = sw
        self.live = Live(status_table(sw.dir), refresh_per_second=1)
        self.live.start()
        self._last = 0.0

    def refresh(self) -> None:
        if time.time() - self._last > 2:
            self.live.update(status_table(self.sw.dir))
            self._last = time.time()

    def stop(self) -> None:
        self.live.update(status_table(self.sw.dir))
        self.live.stop()


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
    _present_token()
    client = JobSubmissionClient(address)
    wd = Path(tempfile.mkdtemp(prefix="ungrok-job-"))
    shutil.copy(spec_file, wd / "grid.toml")
    entry = f"ungrok sweep grid.toml --address auto --out {Path(out).resolve()} --no-progress"
    if _is_loopback(address):
        entry += " --node-ip-address 127.0.0.1"
    for attempt in range(60):  # a freshly started head may not have its job agent up yet
        try:
            job_id = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(wd)})
            break
        except RuntimeError as e:
            if "No available agent" not in str(e) or attempt == 59:
                raise
            time.sleep(1.0)
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
