"""Capture activations at the prediction position for every checkpoint of a run into its zarr group.

Method. The model is built once (``runner.model.load_model``); each checkpoint's weights
(``weights/step_*.safetensors``) are loaded into it and it runs once over each family's probe
prefixes (``<bos> prefix`` plus the answers' shared leading tokens, :mod:`mech.positions`;
right-padded, batched). Forward hooks, attached only inside ``model.hooks(...)`` (a scoped
context manager that removes exactly the hooks it added), copy out the prediction position's
row of each requested activation as soon as it is produced, so nothing of size
``batch x pos x ...`` is kept beyond one batch: memory is ``batch_size`` times the per-item row
(:func:`bytes_per_item`), a few MB per item even for a 24-layer, d_model 2048 model.

What is stored (names from :func:`mech.names.hook_name`, dims after ``(step, item)``):

- ``hook_embed``, ``hook_pos_embed`` ``(d_model)``: token and position embedding;
- ``blocks.L.hook_resid_pre`` / ``blocks.L.hook_resid_post`` ``(layer, d_model)``;
- ``blocks.L.attn.hook_result`` ``(layer, head, d_model)``: ``hook_z`` projected through ``W_O``
  per head (``b_O`` not included: it is in the weights);
- ``blocks.L.attn.hook_pattern`` ``(layer, head, key_pos)``: attention from the prediction
  position to every key position (0 past the item's end: causal mask);
- ``blocks.L.hook_mlp_out`` ``(layer, d_model)``;
- ``ln_final.hook_scale`` ``()``: the final LayerNorm's scale, so direct logit attribution can be
  redone from the stored rows;
- ``hook_unembed`` ``(answer)``: the (pre-softcap) logits of the ``correct`` and the
  ``distractor`` token at the decision site (the first continuation tokens that differ, see
  :mod:`mech.positions`; on conflict items: the rule's and the competitor's answer).

Coordinates: ``step``, ``item`` (ids), ``layer``, ``head``, ``answer``, ``key_pos``; per item
``condition``, ``split``, ``template_id``, ``cue_class``, ``pred_pos``, ``cue_pos``,
``evidence_pos``. The residual stream's writers (``hook_embed``, ``hook_pos_embed``,
``hook_result``, ``hook_mlp_out``), ``ln_final.hook_scale`` and ``hook_unembed`` are float32 (their
sum must reproduce the logit gap within 1e-3, :mod:`mech.decompose`); the other activations are
float16 (checked for overflow) unless ``dtype="float32"``. Chunks are one
checkpoint by (up to) all items.

Atomicity. A family's capture is written into a staging group *outside* the zarr hierarchy
(``.<store>.mech-staging/`` beside the store, same filesystem), with a completion counter
``n_complete`` advanced after each checkpoint's rows (a preempted capture resumes from it). Only
when every checkpoint is written is the staging folder renamed to ``<run group>/mech/<family>``
(an atomic rename); a reader never sees a half-written array.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import zarr
from jaxtyping import Float
from torch import Tensor

from runner.model import load_model
from runner.store import store_location

from . import names as N
from .positions import cue_class
from .probes import ProbeTensors, RunContext, encode_probes, run_context
from .runtime import hook_count, load_weights, scoped_hooks, torch_threads  # noqa: F401  (re-exported)

MECH_GROUP = "mech"
F16_MAX = 65504.0


# ---- hooks -----------------------------------------------------------------------------------
def available_kinds(model, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """Kinds whose hooks exist on this model (a rotary model has no ``hook_pos_embed``)."""
    hd = model.hook_dict
    return tuple(k for k in kinds if N.source_hook(k, 0) in hd)


def _n_layers(model) -> int:
    return int(model.cfg.n_layers)


@torch.no_grad()
def capture_batch(model, tokens: Tensor, pred_pos: Tensor, answer_ids: Tensor, kinds: tuple[str, ...],
                  W_O: Float[Tensor, "layer head d_head d_model"] | None = None) -> dict[str, Tensor]:
    """One forward over ``tokens`` (batch, pos); returns per-kind rows at ``pred_pos``.

    Shapes: ``(batch, *dims(kind)[2:])``; ``answer_ids`` is (batch, 2) (correct, distractor).
    """
    b = torch.arange(tokens.shape[0])
    rows: dict[str, list] = {k: [None] * (_n_layers(model) if N.is_layered(k) else 1) for k in kinds}
    if "result" in kinds and W_O is None:
        W_O = model.W_O.detach()

    def make(kind: str, layer: int) -> Callable:
        slot = layer if N.is_layered(kind) else 0

        def fn(act, hook):
            if kind == "pattern":  # (batch, head, q, k): the prediction position's query row
                rows[kind][slot] = act[b, :, pred_pos, :].detach().float().clone()
            elif kind == "result":  # z (batch, pos, head, d_head) -> per-head output
                assert W_O is not None
                z = act[b, pred_pos].detach().float()
                rows[kind][slot] = torch.einsum("bhd,hdm->bhm", z, W_O[layer].float())
            elif kind == "ln_final_scale":
                rows[kind][slot] = act[b, pred_pos].detach().float().reshape(len(b))
            elif kind == "unembed":
                last = act[b, pred_pos].detach().float()
                rows[kind][slot] = last.gather(-1, answer_ids)
            else:
                rows[kind][slot] = act[b, pred_pos].detach().float().clone()
            return act

        return fn

    hooks = []
    for k in kinds:
        for layer in (range(_n_layers(model)) if N.is_layered(k) else [0]):
            hooks.append((N.source_hook(k, layer), make(k, layer)))
    with scoped_hooks(model, hooks):
        model(tokens)
    out = {}
    for k, parts in rows.items():
        out[k] = torch.stack(parts, 1) if N.is_layered(k) else parts[0]
    return out


def capture_probes(model, probes: ProbeTensors, kinds: tuple[str, ...] = N.DEFAULT_KINDS,
                   batch_size: int = 64, key_len: int | None = None) -> dict[str, np.ndarray]:
    """All items of ``probes`` in batches; numpy float32 arrays ``(item, *dims(kind)[2:])``.

    ``pattern`` is zero-padded on ``key_pos`` to ``key_len`` (default the tokens' width). Items
    are batched by length (each batch cut at its longest item: less padding to run), the rows
    returned in item order."""
    was = model.training
    model.eval()
    W_O = model.W_O.detach() if "result" in kinds else None
    answers = torch.stack([probes.correct_id, probes.distractor_id], 1)
    key_len = key_len or probes.tokens.shape[1]
    order = torch.argsort(probes.pred_pos, stable=True)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for i in range(0, probes.n, batch_size):
        idx = order[i: i + batch_size]
        pp = probes.pred_pos[idx]
        toks = probes.tokens[idx, : int(pp.max()) + 1]
        got = capture_batch(model, toks, pp, answers[idx], kinds, W_O)
        for k, v in got.items():
            if k == "pattern" and v.shape[-1] < key_len:
                v = torch.nn.functional.pad(v, (0, key_len - v.shape[-1]))
            parts[k].append(v.numpy())
    model.train(was)
    out = {}
    for k, v in parts.items():
        rows = np.concatenate(v, 0)
        out[k] = np.empty_like(rows)
        out[k][order.numpy()] = rows
    return out


def bytes_per_item(cfg, kinds: tuple[str, ...] = N.DEFAULT_KINDS, key_len: int = 64) -> int:
    """Host memory one item's captured rows take (float32 in flight), for a TL config."""
    L, H, D = int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_model)
    size = {"embed": D, "pos_embed": D, "resid_pre": L * D, "resid_post": L * D, "result": L * H * D,
            "pattern": L * H * key_len, "mlp_out": L * D, "z": L * H * int(cfg.d_head), "ln_final_scale": 1,
            "unembed": 2, "attn_out": L * D, "v": L * H * int(cfg.d_head)}
    return 4 * sum(size[k] for k in kinds)


# ---- store locations ---------------------------------------------------------------------------
def capture_location(run_dir: str | Path, family: str, store: str | Path | None = None,
                     group: str | None = None) -> tuple[Path, str]:
    """(zarr store path, group path) of a family's published capture. Defaults: the run's own
    store and group (``runner.store.store_location``) with ``mech/<family>`` under it."""
    if store is None:
        store_path, run_group = store_location(run_dir)
    else:
        store_path, run_group = Path(store), group or ""
    base = f"{run_group}/{MECH_GROUP}" if run_group else MECH_GROUP
    return Path(store_path), f"{base}/{family}"


def _staging_dir(store_path: Path, group: str) -> Path:
    return store_path.parent / f".{store_path.name}.mech-staging" / group.replace("/", "__")


def open_capture(run_dir: str | Path, family: str, store: str | Path | None = None, group: str | None = None):
    """The published capture as an ``xarray.Dataset`` (per-item variables set as coordinates)."""
    import xarray as xr

    path, g = capture_location(run_dir, family, store, group)
    ds = xr.open_zarr(str(path), group=g, consolidated=False)
    return ds.set_coords([v for v in ("condition", "split", "template_id", "cue_class", "pred_pos", "cue_pos",
                                      "evidence_pos") if v in ds])


# ---- the capture ------------------------------------------------------------------------------
def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Steps that have saved weights, ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in (Path(run_dir) / "weights").glob("step_*.safetensors"))


def _plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def _to_storage(kind: str, x: np.ndarray) -> np.ndarray:
    if kind in N.FLOAT32_KINDS:
        return x.astype(np.float32)
    if np.abs(x).max(initial=0.0) >= F16_MAX:
        raise OverflowError(f"{N.hook_name(kind)} exceeds the float16 range; capture with dtype='float32'")
    return x.astype(np.float16)


class _Staging:
    """One family's staging group: preallocated arrays, a completion counter, then publish."""

    def __init__(self, root: Path, plan: dict, probes: ProbeTensors, shapes: dict[str, tuple[int, ...]],
                 dtype: str, chunk_bytes: int) -> None:
        self.root, self.plan = root, plan
        h = _plan_hash(plan)
        g = None
        if (root / "zarr.json").exists():
            g = zarr.open_group(str(root), mode="a")
            if g.attrs.get("plan_hash") != h:
                g = None
        if g is None:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            g = zarr.open_group(str(root), mode="w")
            self._layout(g, probes, shapes, dtype, chunk_bytes)
            g.attrs.update({"plan_hash": h, "plan": plan, "n_complete": 0, "complete": False})
        self.g: Any = g  # zarr.Group (zarr's stubs type item access as Array | Group)

    @staticmethod
    def _layout(g, probes: ProbeTensors, shapes, dtype: str, chunk_bytes: int) -> None:
        for kind, shape in shapes.items():
            n_item = probes.n
            dt = "f4" if (kind in N.FLOAT32_KINDS or dtype == "float32") else "f2"
            row = int(np.prod(shape)) * (4 if dt == "f4" else 2)
            ic = max(1, min(n_item, chunk_bytes // max(row, 1)))
            g.create_array(N.hook_name(kind), shape=(0, n_item, *shape), chunks=(1, ic, *shape), dtype=dt,
                           dimension_names=list(N.dims(kind)), fill_value=np.nan)
        coords = {"item": np.array([it.item_id for it in probes.items]),
                  "condition": np.array([it.condition for it in probes.items]),
                  "split": np.array([it.split for it in probes.items]),
                  "template_id": np.array([it.template_id for it in probes.items]),
                  "cue_class": np.array([cue_class(it) or "" for it in probes.items])}
        for name, val in coords.items():
            a = g.create_array(name, shape=val.shape, dtype=str, dimension_names=["item"])
            a[:] = val
        for name in ("pred_pos", "cue_pos", "evidence_pos"):
            val = getattr(probes, name).numpy().astype("i8")
            a = g.create_array(name, shape=val.shape, dtype="i8", dimension_names=["item"])
            a[:] = val

    def set_axes(self, steps: list[int], shapes: dict[str, tuple[int, ...]], n_layers: int, n_heads: int,
                 key_len: int) -> None:
        g = self.g
        axes = {"step": np.array(steps, dtype="i8"), "layer": np.arange(n_layers, dtype="i8"),
                "head": np.arange(n_heads, dtype="i8"), "key_pos": np.arange(key_len, dtype="i8")}
        for name, val in axes.items():
            if name not in g:
                a = g.create_array(name, shape=val.shape, dtype="i8", dimension_names=[name])
                a[:] = val
        if "answer" not in g and "unembed" in shapes:
            a = g.create_array("answer", shape=(2,), dtype=str, dimension_names=["answer"])
            a[:] = np.array(["correct", "distractor"])
        for kind in shapes:
            arr = g[N.hook_name(kind)]
            if arr.shape[0] != len(steps):
                arr.resize((len(steps), *arr.shape[1:]))

    @property
    def n_complete(self) -> int:
        return int(self.g.attrs.get("n_complete", 0))

    def write(self, i: int, rows: dict[str, np.ndarray]) -> None:
        for kind, x in rows.items():
            arr = self.g[N.hook_name(kind)]
            arr[i] = _to_storage(kind, x) if arr.dtype == np.float16 else x.astype(np.float32)
        self.g.attrs["n_complete"] = i + 1

    def publish(self, dest_store: Path, dest_group: str, extra_attrs: dict) -> None:
        self.g.attrs.update({**extra_attrs, "complete": True,
                             "completed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        parent = dest_group.rsplit("/", 1)[0]
        zarr.open_group(str(dest_store), mode="a", use_consolidated=False).require_group(parent)
        dest = dest_store / dest_group
        old = None
        if dest.exists():
            old = self.root.parent / f".old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
        os.rename(self.root, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        try:  # tidy the staging folders if empty
            self.root.parent.rmdir()
            self.root.parent.parent.rmdir()
        except OSError:
            pass


def capture_run(run_dir: str | Path, steps: list[int] | None = None, *, families: list[str] | None = None,
                batch_size: int = 64, names_filter=None, dtype: str = "float16",
                store: str | Path | None = None, group: str | None = None, chunk_mb: float = 64.0,
                items=None, threads: int | None = 1, log: Callable[[str], None] | None = None) -> dict:
    """Capture activations at the prediction position for checkpoints of a run; returns a summary.

    ``steps``: checkpoints to capture (default: every step with saved weights). ``families``:
    rule families (default: every family of the run's battery). ``batch_size`` bounds memory
    (``batch_size * bytes_per_item``). ``names_filter``: which activations (see
    :func:`mech.names.resolve_filter`: kind names, hook names or a predicate on the stacked hook
    name). ``dtype``: ``float16`` (default, overflow-checked) or ``float32`` for activations.
    ``store``/``group``: write elsewhere than the run's own store group (e.g. to keep a shared
    sweep store read-only); the capture goes to ``<group>/mech/<family>``.

    Each family is staged outside the hierarchy and published by an atomic rename once every
    checkpoint is in (a rerun after preemption resumes from the staged counter). Returns
    ``{"families": {family: {"store", "group", "steps", "n_items"}}, "seconds", "bytes_per_item"}``.
    ``threads``: torch threads during the capture (restored after).
    """
    with torch_threads(threads):
        return _capture_run(run_dir, steps, families, batch_size, names_filter, dtype, store, group, chunk_mb,
                            items, log)


def _capture_run(run_dir, steps, families, batch_size, names_filter, dtype, store, group, chunk_mb, items,
                 log) -> dict:
    t0 = time.time()
    ctx: RunContext = run_context(run_dir, items)
    steps = checkpoint_steps(run_dir) if steps is None else sorted(set(int(s) for s in steps))
    if not steps:
        raise FileNotFoundError(f"{run_dir}: no checkpoints to capture")
    families = families or ctx.families
    kinds = N.resolve_filter(names_filter)
    probes = {f: encode_probes([it for it in ctx.items if it.family == f], ctx.tokenizer, ctx.bos_id,
                               ctx.cfg.model.n_ctx, ctx.pad_id) for f in families}
    stagings: dict[str, _Staging] = {}
    shapes_by_f: dict[str, dict[str, tuple[int, ...]]] = {}
    model: Any = None
    for i, step in enumerate(steps):
        need = [f for f in families if f not in stagings or stagings[f].n_complete <= i]
        if model is None:
            model = load_model(run_dir, step)
        elif need:  # one model, each checkpoint's weights copied in: ~2 ms, a rebuild ~0.3 s
            load_weights(model, run_dir, step)
        if i == 0:
            kinds = available_kinds(model, kinds)
            L, H = _n_layers(model), int(model.cfg.n_heads)
            for f in families:
                key_len = probes[f].tokens.shape[1]
                one = capture_probes(model, probes[f].subset([0]), kinds, 1, key_len)
                shapes = {k: tuple(v.shape[1:]) for k, v in one.items()}
                shapes_by_f[f] = shapes
                store_path, g = capture_location(run_dir, f, store, group)
                plan = {"run_id": ctx.cfg.run_id, "family": f, "steps": steps, "kinds": list(kinds), "dtype": dtype,
                        "items": [it.item_id for it in probes[f].items]}
                st = _Staging(_staging_dir(store_path, g), plan, probes[f], shapes, dtype, int(chunk_mb * 2**20))
                st.set_axes(steps, shapes, L, H, key_len)
                stagings[f] = st
            need = [f for f in families if stagings[f].n_complete <= i]
        for f in need:
            rows = capture_probes(model, probes[f], kinds, batch_size, probes[f].tokens.shape[1])
            stagings[f].write(i, rows)
        if log:
            log(f"captured step {step} ({i + 1}/{len(steps)})")
    out = {}
    for f in families:
        store_path, g = capture_location(run_dir, f, store, group)
        stagings[f].publish(store_path, g, {"family": f, "run_id": ctx.cfg.run_id, "kinds": list(kinds),
                                            "hook_names": [N.hook_name(k) for k in kinds]})
        out[f] = {"store": str(store_path), "group": g, "steps": steps, "n_items": probes[f].n}
    return {"families": out, "seconds": time.time() - t0,
            "bytes_per_item": bytes_per_item(model.cfg, kinds, max(p.tokens.shape[1] for p in probes.values()))}
