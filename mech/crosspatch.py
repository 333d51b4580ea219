"""Same-run patching between checkpoints: a component of one checkpoint swapped into another.

Components: ``embed`` (token + position embedding), every head ``L{l}H{h}`` (its output
``z_h @ W_O[h]``) and every MLP ``MLP{l}``, at every position. For a source checkpoint ``src``
and a destination ``dst`` (the run's CM peak and its final checkpoint, both ways), the source
model runs once on the probe sequences and its activations are cached; the destination model
runs on the same sequences with one component's output replaced by the source's (everything
downstream recomputes), and the project's CM (``runner.scoring``: summed continuation log-probs
over heldout conflict items) is read:

    fraction restored = (CM_patched - CM_dst) / (CM_src - CM_dst)

Peak into final: how much of the lost margin one peak component brings back; final into peak:
how much of the collapse one final component reproduces. NaN when CM_src == CM_dst. A head is
swapped on ``hook_attn_out`` (its destination output subtracted, the source's added, the
destination's ``hook_z`` read in the same forward), so the destination's other heads, ``b_O`` and
``W_O`` stay its own. Patching a checkpoint into itself changes nothing (CM_patched == CM_dst);
patching every component from a source whose readout (final norm, unembedding, ``b_O``) the
destination shares reproduces CM_src exactly: fraction 1 (both are tests).

One generic routine (:func:`patched_cm`) and a small hook builder per kind of component
(:data:`BUILDERS`), like ``transformer_lens.patching``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from runner.scoring import EncodedBattery, continuation_logprobs

from .names import hook_name, source_hook
from .runtime import scoped_hooks

Hooks = list[tuple[str, Callable]]


def components(model) -> list[str]:
    """``embed``, then per layer its heads and its MLP."""
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    out = ["embed"]
    for layer in range(L):
        out += [f"L{layer}H{h}" for h in range(H)] + [f"MLP{layer}"]
    return out


def _cache_names(model) -> list[str]:
    L = int(model.cfg.n_layers)
    names = [hook_name("embed")] + ([hook_name("pos_embed")] if source_hook("pos_embed") in model.hook_dict else [])
    return names + [hook_name(k, layer) for layer in range(L) for k in ("z", "mlp_out")]


def _replace(value: Tensor) -> Callable:
    return lambda act, hook: value.to(act.dtype)


def _embed_hooks(cache: dict, src, dst, label: str) -> Hooks:
    names = [hook_name("embed"), hook_name("pos_embed")]
    return [(n, _replace(cache[n])) for n in names if n in cache]


def _mlp_hooks(cache: dict, src, dst, label: str) -> Hooks:
    layer = int(label[3:])
    return [(hook_name("mlp_out", layer), _replace(cache[hook_name("mlp_out", layer)]))]


def _head_hooks(cache: dict, src, dst, label: str) -> Hooks:
    layer, h = (int(x) for x in label[1:].split("H"))
    out_src = cache[hook_name("z", layer)][:, :, h] @ src.W_O[layer, h].detach()
    W_O_dst = dst.W_O[layer, h].detach()
    seen: dict[str, Tensor] = {}

    def grab(z, hook):
        seen["z"] = z[:, :, h]
        return z

    def swap(out, hook):
        return out + (out_src - seen["z"] @ W_O_dst).to(out.dtype)

    return [(hook_name("z", layer), grab), (hook_name("attn_out", layer), swap)]


def _kind(label: str) -> str:
    return "embed" if label == "embed" else ("mlp" if label.startswith("MLP") else "head")


BUILDERS: dict[str, Callable[[dict, object, object, str], Hooks]] = {
    "embed": _embed_hooks, "mlp": _mlp_hooks, "head": _head_hooks}


def _sub_battery(enc: EncodedBattery, idx: list[int]) -> EncodedBattery:
    rows = list(idx) + [enc.n + i for i in idx]
    return EncodedBattery(items=[enc.items[i] for i in idx], tokens=enc.tokens[rows], cont_mask=enc.cont_mask[rows])


def _chunks(enc: EncodedBattery, chunk: int) -> list[EncodedBattery]:
    return [_sub_battery(enc, list(range(i, min(i + chunk, enc.n)))) for i in range(0, enc.n, chunk)]


@torch.no_grad()
def source_caches(src, subs: list[EncodedBattery]) -> list[dict]:
    """The source model's component activations on each chunk (what every patch reads)."""
    keep = set(_cache_names(src))
    return [dict(src.run_with_cache(sub.tokens, names_filter=lambda n: n in keep)[1].items()) for sub in subs]


@torch.no_grad()
def patched_cm(src, dst, enc: EncodedBattery, patch: list[str] | None, chunk: int = 64,
               caches: list[dict] | None = None) -> float:
    """Mean log p(correct) - log p(distractor) over ``enc``'s items, run on ``dst`` with the
    components in ``patch`` (None or []: nothing) taken from ``src``; ``chunk`` items per forward,
    ``caches``: :func:`source_caches` of those chunks (computed here when not given)."""
    subs = _chunks(enc, chunk)
    if patch and caches is None:
        caches = source_caches(src, subs)
    diffs = []
    for j, sub in enumerate(subs):
        hooks: Hooks = []
        for label in patch or []:
            assert caches is not None
            hooks += BUILDERS[_kind(label)](caches[j], src, dst, label)
        with scoped_hooks(dst, hooks):
            lpc, lpd = continuation_logprobs(dst, sub, batch_size=2 * sub.n)
        diffs.append(lpc - lpd)
    return float(np.concatenate(diffs).mean())


def fraction(cm_patched: float, cm_dst: float, cm_src: float) -> float:
    """(CM_patched - CM_dst) / (CM_src - CM_dst); NaN when the two checkpoints tie."""
    den = cm_src - cm_dst
    return float((cm_patched - cm_dst) / den) if abs(den) > 1e-9 else float("nan")


def cross_patch(src, dst, enc: EncodedBattery, labels: list[str] | None = None) -> dict:
    """Every component of ``src`` swapped alone into ``dst``: ``{"cm_src", "cm_dst",
    "components": {label: {"cm", "fraction"}}, "best": label}`` (best = largest fraction)."""
    cm_src, cm_dst = patched_cm(src, src, enc, None), patched_cm(dst, dst, enc, None)
    caches = source_caches(src, _chunks(enc, 64))  # once: every component reads the same source run
    rows = {}
    for label in labels or components(dst):
        cm = patched_cm(src, dst, enc, [label], caches=caches)
        rows[label] = {"cm": cm, "fraction": fraction(cm, cm_dst, cm_src)}
    finite = {k: v["fraction"] for k, v in rows.items() if np.isfinite(v["fraction"])}
    return {"cm_src": cm_src, "cm_dst": cm_dst, "components": rows,
            "best": max(finite, key=finite.__getitem__) if finite else None}


def asymmetry(forward: dict, backward: dict) -> list[dict]:
    """Rows ``component, peak->final fraction, final->peak fraction`` sorted by the larger of the
    two; ``forward``/``backward`` are :func:`cross_patch` results (peak into final, and back)."""
    rows = [{"component": c, "peak_into_final": forward["components"][c]["fraction"],
             "final_into_peak": backward["components"][c]["fraction"]} for c in forward["components"]]
    key = lambda r: -np.nanmax([r["peak_into_final"], r["final_into_peak"], -np.inf])  # noqa: E731
    return sorted(rows, key=key)

