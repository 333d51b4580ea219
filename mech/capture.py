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
checkpoint by (up to) all items, uncompressed by default (:mod:`mech.capture_write`: the codec
was chosen by measurement). A checkpoint's rows are written by a background thread while the
next checkpoint runs; the thread is joined (and any error it hit raised) before publishing.

Atomicity. A family's capture is written into a staging group *outside* the zarr hierarchy
(``.<store>.mech-staging/`` beside the store, same filesystem), with a completion counter
``n_complete`` advanced after each checkpoint's rows (a preempted capture resumes from it). Only
when every checkpoint is written is the staging folder renamed to ``<run group>/mech/<family>``
(an atomic rename); a reader never sees a half-written array.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from runner.model import load_model
from runner.store import store_location

from . import names as N
from .capture_write import DEFAULT_CODEC, BackgroundWriter, CheckpointProgress, _Staging, codec_args
from .probes import ProbeTensors, RunContext, encode_probes, run_context
from .runtime import hook_count, load_weights, scoped_hooks, torch_threads  # noqa: F401  (re-exported)

MECH_GROUP = "mech"


# ---- hooks -----------------------------------------------------------------------------------
def available_kinds(model, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """Kinds whose hooks exist on this model (a rotary model has no ``hook_pos_embed``)."""
    hd = model.hook_dict
    return tuple(k for k in kinds if N.source_hook(k, 0) in hd)


def _n_layers(model) -> int:
    return int(model.cfg.n_layers)


class _Collector:
    """Hooks that copy the prediction position's rows of each kind out of the batch in flight:
    attached once (:meth:`hooks`) for many batches, each batch announced by :meth:`start` and its
    rows taken by :meth:`take` (``(batch, *dims(kind)[2:])`` per kind)."""

    def __init__(self, model, kinds: tuple[str, ...], W_O: Tensor | None = None) -> None:
        self.kinds, self.n_layers = kinds, _n_layers(model)
        self.W_O = model.W_O.detach() if "result" in kinds and W_O is None else W_O
        self.rows: dict[str, list] = {}

    def start(self, pred_pos: Tensor, answer_ids: Tensor) -> None:
        self.b, self.pred_pos, self.answer_ids = torch.arange(len(pred_pos)), pred_pos, answer_ids
        self.rows = {k: [None] * (self.n_layers if N.is_layered(k) else 1) for k in self.kinds}

    def take(self) -> dict[str, Tensor]:
        return {k: torch.stack(parts, 1) if N.is_layered(k) else parts[0] for k, parts in self.rows.items()}

    def _row(self, kind: str, layer: int, act: Tensor) -> Tensor:
        b, pp = self.b, self.pred_pos
        if kind == "pattern":  # (batch, head, q, k): the prediction position's query row
            return act[b, :, pp, :].detach().float().clone()
        if kind == "result":  # z (batch, pos, head, d_head) -> per-head output
            assert self.W_O is not None
            return torch.einsum("bhd,hdm->bhm", act[b, pp].detach().float(), self.W_O[layer].float())
        if kind == "ln_final_scale":
            return act[b, pp].detach().float().reshape(len(b))
        if kind == "unembed":
            return act[b, pp].detach().float().gather(-1, self.answer_ids)
        return act[b, pp].detach().float().clone()

    def hooks(self) -> list[tuple[str, Callable]]:
        def make(kind: str, layer: int) -> Callable:
            slot = layer if N.is_layered(kind) else 0

            def fn(act, hook):
                self.rows[kind][slot] = self._row(kind, layer, act)
                return act

            return fn

        return [(N.source_hook(k, layer), make(k, layer)) for k in self.kinds
                for layer in (range(self.n_layers) if N.is_layered(k) else [0])]


@torch.no_grad()
def capture_batch(model, tokens: Tensor, pred_pos: Tensor, answer_ids: Tensor, kinds: tuple[str, ...],
                  W_O: Float[Tensor, "layer head d_head d_model"] | None = None) -> dict[str, Tensor]:
    """One forward over ``tokens`` (batch, pos); returns per-kind rows at ``pred_pos``.

    Shapes: ``(batch, *dims(kind)[2:])``; ``answer_ids`` is (batch, 2) (correct, distractor).
    """
    col = _Collector(model, kinds, W_O)
    col.start(pred_pos, answer_ids)
    with scoped_hooks(model, col.hooks()):
        model(tokens)
    return col.take()


@torch.no_grad()
def capture_probes(model, probes: ProbeTensors, kinds: tuple[str, ...] = N.DEFAULT_KINDS,
                   batch_size: int = 64, key_len: int | None = None) -> dict[str, np.ndarray]:
    """All items of ``probes`` in batches; numpy float32 arrays ``(item, *dims(kind)[2:])``.

    ``pattern`` is zero-padded on ``key_pos`` to ``key_len`` (default the tokens' width). Items
    are batched by length (each batch cut at its longest item: less padding to run), the rows
    returned in item order. The hooks are attached once for all batches."""
    was = model.training
    if was:  # eval()/train() walk every submodule of the bridge: ~10 ms each, skipped when already so
        model.eval()
    answers = torch.stack([probes.correct_id, probes.distractor_id], 1)
    key_len = key_len or probes.tokens.shape[1]
    order = torch.argsort(probes.pred_pos, stable=True)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    col = _Collector(model, kinds)
    with scoped_hooks(model, col.hooks()):
        for i in range(0, probes.n, batch_size):
            idx = order[i: i + batch_size]
            pp = probes.pred_pos[idx]
            col.start(pp, answers[idx])
            model(probes.tokens[idx, : int(pp.max()) + 1])
            for k, v in col.take().items():
                if k == "pattern" and v.shape[-1] < key_len:
                    v = torch.nn.functional.pad(v, (0, key_len - v.shape[-1]))
                parts[k].append(v.numpy())
    if was:
        model.train(True)
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


def capture_run(run_dir: str | Path, steps: list[int] | None = None, *, families: list[str] | None = None,
                batch_size: int = 64, names_filter=None, dtype: str = "float16",
                store: str | Path | None = None, group: str | None = None, chunk_mb: float = 64.0,
                items=None, threads: int | None = 1, log: Callable[[str], None] | None = None,
                codec: str = DEFAULT_CODEC, progress: bool = True) -> dict:
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
    ``threads``: torch threads during the capture (restored after). ``codec``: the arrays'
    compression (:data:`mech.capture_write.CODECS`, lossless; default none, by measurement).
    ``progress``: show progress over the checkpoints (plain lines when stdout is not a terminal,
    as training does; :mod:`runner._progress`). A checkpoint's rows are written on a background
    thread while the next one runs (:class:`mech.capture_write.BackgroundWriter`), joined before
    publishing.
    """
    codec_args(codec)
    with torch_threads(threads):
        return _capture_run(run_dir, steps, families, batch_size, names_filter, dtype, store, group, chunk_mb,
                            items, log, codec, progress)


def _capture_run(run_dir, steps, families, batch_size, names_filter, dtype, store, group, chunk_mb, items,
                 log, codec, progress) -> dict:
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
    done: dict[str, int] = {}  # checkpoints each family had staged when this call began (resume)
    model: Any = None
    writer = BackgroundWriter()  # rows are written while the next checkpoint runs
    shown = CheckpointProgress(f"mech capture {ctx.cfg.run_id}", len(steps), progress)
    try:
        for i, step in enumerate(steps):
            need = [f for f in families if done.get(f, 0) <= i]
            if model is None:
                model = load_model(run_dir, step)
            elif need:  # one model, each checkpoint's weights copied in: ~2 ms, a rebuild ~0.3 s
                load_weights(model, run_dir, step)
            if i == 0:
                kinds = available_kinds(model, kinds)
                stagings = {f: _open_staging(run_dir, ctx, model, probes[f], f, kinds, steps, dtype, store, group,
                                             chunk_mb, codec) for f in families}
                done = {f: st.n_complete for f, st in stagings.items()}
                need = [f for f in families if done[f] <= i]
            for f in need:
                rows = capture_probes(model, probes[f], kinds, batch_size, probes[f].tokens.shape[1])
                writer.submit(stagings[f].write, i, rows)
            if log:
                log(f"captured step {step} ({i + 1}/{len(steps)})")
            shown.update(i + 1, f"step {step}")
    except BaseException:
        writer.close(reraise=False)  # rows already handed over are finished: a rerun resumes after them
        raise
    finally:
        shown.close()
    writer.close()  # joined before publishing; a writer error is raised here
    out = {}
    for f in families:
        store_path, g = capture_location(run_dir, f, store, group)
        stagings[f].publish(store_path, g, {"family": f, "run_id": ctx.cfg.run_id, "kinds": list(kinds),
                                            "hook_names": [N.hook_name(k) for k in kinds]})
        out[f] = {"store": str(store_path), "group": g, "steps": steps, "n_items": probes[f].n}
    return {"families": out, "seconds": time.time() - t0,
            "bytes_per_item": bytes_per_item(model.cfg, kinds, max(p.tokens.shape[1] for p in probes.values()))}


def _open_staging(run_dir, ctx: RunContext, model, probes: ProbeTensors, family: str, kinds: tuple[str, ...],
                  steps: list[int], dtype: str, store, group, chunk_mb: float, codec: str) -> _Staging:
    """Family ``family``'s staging group (new, or the one a preempted capture of the same plan left),
    laid out for the shapes one item's capture has."""
    key_len = probes.tokens.shape[1]
    one = capture_probes(model, probes.subset([0]), kinds, 1, key_len)
    shapes = {k: tuple(v.shape[1:]) for k, v in one.items()}
    store_path, g = capture_location(run_dir, family, store, group)
    plan = {"run_id": ctx.cfg.run_id, "family": family, "steps": steps, "kinds": list(kinds), "dtype": dtype,
            "items": [it.item_id for it in probes.items]}
    st = _Staging(_staging_dir(store_path, g), plan, probes, shapes, dtype, int(chunk_mb * 2**20), codec)
    st.set_axes(steps, shapes, _n_layers(model), int(model.cfg.n_heads), key_len)
    return st
