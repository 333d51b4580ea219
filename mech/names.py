"""One helper for hook names, reused as the zarr array paths of a capture.

TransformerLens hook names carry the layer (``blocks.3.hook_resid_pre``); a capture stacks every
layer into one array with a ``layer`` dimension and names it by the same helper with the layer
left as the letter ``L`` (``blocks.L.hook_resid_pre``). So the array path *is* the hook name
pattern, and ``hook_name(kind, layer=l)`` recovers the hook the layer-``l`` slice came from::

    hook_name("resid_pre", 3)   -> "blocks.3.hook_resid_pre"      (hook to attach)
    hook_name("resid_pre")      -> "blocks.L.hook_resid_pre"      (zarr array path)
    hook_name("embed")          -> "hook_embed"                   (no layer: same in both)

``result`` is TransformerLens's classic name for per-head outputs projected through ``W_O``
(``hook_z @ W_O``, without ``b_O``); it is computed from ``hook_z`` (the hook that is attached),
because the bridge does not split heads by default.
"""

from __future__ import annotations

from typing import Callable

LAYER_PLACEHOLDER = "L"

# kind -> (hook name pattern, hook actually attached to compute it, dims after (step, item))
_KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "embed": ("hook_embed", "hook_embed", ("d_model",)),
    "pos_embed": ("hook_pos_embed", "hook_pos_embed", ("d_model",)),
    "resid_pre": ("blocks.{layer}.hook_resid_pre", "blocks.{layer}.hook_resid_pre", ("layer", "d_model")),
    "resid_post": ("blocks.{layer}.hook_resid_post", "blocks.{layer}.hook_resid_post", ("layer", "d_model")),
    "result": ("blocks.{layer}.attn.hook_result", "blocks.{layer}.attn.hook_z", ("layer", "head", "d_model")),
    "pattern": ("blocks.{layer}.attn.hook_pattern", "blocks.{layer}.attn.hook_pattern", ("layer", "head", "key_pos")),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", "blocks.{layer}.hook_mlp_out", ("layer", "d_model")),
    "attn_out": ("blocks.{layer}.hook_attn_out", "blocks.{layer}.hook_attn_out", ("layer", "d_model")),
    "v": ("blocks.{layer}.attn.hook_v", "blocks.{layer}.attn.hook_v", ("layer", "head", "d_head")),
    "z": ("blocks.{layer}.attn.hook_z", "blocks.{layer}.attn.hook_z", ("layer", "head", "d_head")),
    "ln_final_scale": ("ln_final.hook_scale", "ln_final.hook_scale", ()),
    "unembed": ("hook_unembed", "hook_unembed", ("answer",)),
}

#: What ``capture_run`` stores by default (``z`` is left out: ``result`` carries it through W_O;
#: ``attn_out`` and ``v`` are named for the hooks that patch and read them, not captured by default).
DEFAULT_KINDS: tuple[str, ...] = ("embed", "pos_embed", "resid_pre", "resid_post", "result", "pattern",
                                  "mlp_out", "ln_final_scale", "unembed")

#: Kinds kept in float32: the residual stream's writers, the final scale and the answer logits,
#: whose sum must reproduce the logit gap within 1e-3 (``mech.decompose``); the rest are float16.
FLOAT32_KINDS: frozenset[str] = frozenset({"embed", "pos_embed", "resid_pre", "result", "mlp_out", "ln_final_scale",
                                           "unembed"})


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def _check(kind: str) -> None:
    if kind not in _KINDS:
        raise KeyError(f"unknown activation kind {kind!r}; known: {sorted(_KINDS)}")


def is_layered(kind: str) -> bool:
    _check(kind)
    return "{layer}" in _KINDS[kind][0]


def hook_name(kind: str, layer: int | None = None) -> str:
    """The hook name of ``kind`` at ``layer``; with ``layer=None``, the layer-stacked name
    (``blocks.L....``) used as the zarr array path. Kinds without a layer ignore ``layer``."""
    _check(kind)
    pattern = _KINDS[kind][0]
    return pattern.format(layer=LAYER_PLACEHOLDER if layer is None else int(layer))


def source_hook(kind: str, layer: int | None = None) -> str:
    """The hook actually attached to capture ``kind`` (``result`` is computed from ``hook_z``)."""
    _check(kind)
    return _KINDS[kind][1].format(layer=LAYER_PLACEHOLDER if layer is None else int(layer))


def dims(kind: str) -> tuple[str, ...]:
    """Dimension names of the stored array: ``("step", "item", *per_item_dims)``."""
    _check(kind)
    return ("step", "item", *_KINDS[kind][2])


def kind_of(name: str) -> str:
    """Inverse of :func:`hook_name` for stacked names or concrete per-layer names."""
    for kind, (pattern, _, _) in _KINDS.items():
        if name == pattern.format(layer=LAYER_PLACEHOLDER):
            return kind
        if "{layer}" in pattern:
            pre, post = pattern.split("{layer}")
            mid = name[len(pre): len(name) - len(post)] if name.startswith(pre) and name.endswith(post) else ""
            if mid.isdigit():
                return kind
        elif name == pattern:
            return kind
    raise KeyError(f"{name!r} is not a captured hook name")


def resolve_filter(names_filter: Callable[[str], bool] | list[str] | tuple[str, ...] | str | None
                   ) -> tuple[str, ...]:
    """The kinds to capture. ``names_filter`` may be None (the defaults), kind names
    (``["resid_pre", "pattern"]``), hook names in either form, or a predicate on the stacked
    hook name (``lambda n: "attn" in n``), mirroring ``run_with_cache(names_filter=...)``."""
    if names_filter is None:
        return DEFAULT_KINDS
    if isinstance(names_filter, str):
        names_filter = [names_filter]
    if callable(names_filter):
        out = tuple(k for k in DEFAULT_KINDS if names_filter(hook_name(k)))
    else:
        out = tuple(dict.fromkeys(n if n in _KINDS else kind_of(n) for n in names_filter))
    if not out:
        raise ValueError("names_filter selects nothing to capture")
    return out
