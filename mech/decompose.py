"""Exact decomposition of the rule-prior logit gap at the decision site into a direct (embedding
path) term and a contextual term (every attention and MLP increment), per checkpoint.

The gap. ``G = logit[correct] - logit[distractor]`` at the decision site, before any logit
soft-cap (``hook_unembed``), for the first continuation tokens that differ
(:mod:`mech.positions`); on conflict items correct is the rule's answer, so ``G`` is the
rule-prior gap (the paper's she-he gap).

The terms. The final residual at the site is the sum of its writers: the residual entering
block 0 (token and position embedding, after the embedding norm of architectures that have one:
``blocks.0.hook_resid_pre``), each head's output ``z_h @ W_O[h]``, each layer's attention bias
``b_O``, each MLP's output. The final normalisation is affine once its scale is fixed at the *realised* scale of this
forward (``ln_final.hook_scale``, the paper's handling): ``norm(x) = (x - mean x) / s * w + b``
(RMS: no centring, no ``b``; a weightless norm has ``w = 1``), so a writer ``c`` contributes
``((c - mean c) / s) . (w * (W_U[:, correct] - W_U[:, distractor]))``. Then

- ``direct``      = the embedding path's contribution (the residual entering block 0);
- ``attn[l]``     = sum of layer ``l``'s head terms ``head[l, h]`` + its ``b_O`` term;
- ``mlp[l]``      = layer ``l``'s MLP contribution;
- ``contextual``  = sum over layers of ``attn[l] + mlp[l]``;
- ``bias``        = ``b . (W_U[:, c] - W_U[:, d]) + b_U[c] - b_U[d]`` (0 in a bias-free model);

and ``direct + contextual + bias == G``: checked on every item, a :class:`DecompositionError`
when any item is off by more than ``atol`` (1e-3). The writers are read from the capture in
float32 (:data:`mech.names.FLOAT32_KINDS`); a float16 capture would miss the tolerance, so
:mod:`mech.source` recaptures or recomputes instead. Head terms sum to their layer's attention
term minus its ``b_O`` term (``b_O`` belongs to no head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

DECOMPOSE_KINDS = ("resid_pre", "result", "mlp_out", "ln_final_scale", "unembed")
ATOL = 1e-3


class DecompositionError(AssertionError):
    """The terms do not sum to the measured gap (the message says by how much, where)."""


@dataclass
class Readout:
    """One checkpoint's weights the decomposition needs, float32 numpy."""

    w: Float[np.ndarray, " d_model"]
    b: Float[np.ndarray, " d_model"] | None
    rms: bool
    W_U: Float[np.ndarray, "d_model vocab"]
    b_U: Float[np.ndarray, " vocab"]
    b_O: Float[np.ndarray, "layer d_model"]


def readout(model) -> Readout:
    """The final norm's weight/bias/kind, the unembedding and the attention biases of ``model``."""
    def arr(t) -> np.ndarray:  # a copy: the model's parameters are overwritten by the next checkpoint
        return np.array(t.detach().float().numpy(), copy=True)

    ln = model.ln_final
    b = getattr(ln, "bias", None)
    weight = getattr(ln, "weight", None)  # None: a weightless norm (RMSPre)
    W_U = arr(model.W_U)
    b_U = getattr(model, "b_U", None)
    b_O = getattr(model, "b_O", None)
    L, D = int(model.cfg.n_layers), int(model.cfg.d_model)
    return Readout(w=np.ones(W_U.shape[0], np.float32) if weight is None else arr(weight),
                   b=None if b is None else arr(b),
                   rms=str(model.cfg.normalization_type or "").upper().startswith("RMS"), W_U=W_U,
                   b_U=np.zeros(W_U.shape[1], np.float32) if b_U is None else arr(b_U),
                   b_O=np.zeros((L, D), np.float32) if b_O is None else arr(b_O))


def decompose_rows(rows: dict[str, np.ndarray], r: Readout, correct_id: np.ndarray, distractor_id: np.ndarray,
                   atol: float = ATOL) -> dict[str, np.ndarray]:
    """Per-item terms at one checkpoint. ``rows``: the captured kinds of :data:`DECOMPOSE_KINDS`,
    ``(item, ...)``. Returns ``total, direct, contextual, bias`` ``(item,)``, ``attn, mlp, b_O``
    ``(item, layer)``, ``heads`` ``(item, layer, head)`` and ``error`` ``(item,)``; raises
    :class:`DecompositionError` when ``max |error| > atol``."""
    d = (r.W_U[:, correct_id] - r.W_U[:, distractor_id]).T.astype(np.float64)    # (item, d_model)
    wd = d * r.w
    s = rows["ln_final_scale"].astype(np.float64).reshape(-1)                      # (item,)

    def through(x: np.ndarray) -> np.ndarray:                                       # (item, ..., d_model)
        x = x.astype(np.float64)
        if not r.rms:
            x = x - x.mean(-1, keepdims=True)
        wd_ = wd.reshape(wd.shape[0], *([1] * (x.ndim - 2)), wd.shape[1])
        s_ = s.reshape(-1, *([1] * (x.ndim - 1)))
        return ((x / s_) * wd_).sum(-1)

    direct = through(rows["resid_pre"][:, 0])
    heads = through(rows["result"])                                                # (item, layer, head)
    n = heads.shape[0]
    b_o = through(np.broadcast_to(r.b_O, (n, *r.b_O.shape)))                        # (item, layer)
    attn = heads.sum(-1) + b_o
    mlp = through(rows["mlp_out"])
    contextual = (attn + mlp).sum(-1)
    bias = (d * r.b).sum(-1) if r.b is not None else np.zeros(n)
    bias = bias + r.b_U[correct_id] - r.b_U[distractor_id]
    total = rows["unembed"][:, 0].astype(np.float64) - rows["unembed"][:, 1]
    error = direct + contextual + bias - total
    worst = int(np.argmax(np.abs(error))) if n else 0
    if n and abs(error[worst]) > atol:
        raise DecompositionError(
            f"logit-gap terms miss the measured gap by {error[worst]:+.2e} on item {worst} (> {atol:g}); "
            "a float16 capture of the residual writers, or a model whose residual has writers other than "
            "embeddings, heads, b_O and MLPs")
    return {"total": total, "direct": direct, "contextual": contextual, "bias": bias, "attn": attn, "mlp": mlp,
            "b_O": b_o, "heads": heads, "error": error}


def decompose_series(rows, readouts: dict[int, Readout], mask: np.ndarray, atol: float = ATOL) -> dict:
    """Per checkpoint of ``rows`` (:class:`mech.source.FamilyRows`), the item means over ``mask``
    of every term, plus the worst error over all items; JSON-able lists, step axis first:
    ``total/direct/contextual/bias/max_error (step,)``, ``attn/mlp/b_O (step, layer)``,
    ``heads (step, layer, head)``."""
    p = rows.probes
    c, d = p.correct_id.numpy(), p.distractor_id.numpy()
    keys = ("total", "direct", "contextual", "bias", "attn", "mlp", "b_O", "heads")
    out: dict[str, list] = {k: [] for k in (*keys, "max_error")}
    for step in rows.steps:
        terms = decompose_rows(rows.at(step), readouts[step], c, d, atol)
        for k in keys:
            out[k].append(terms[k][mask].mean(0).tolist())
        out["max_error"].append(float(np.abs(terms["error"]).max()))
    return out


def head_share(heads: Float[np.ndarray, "layer head"]) -> tuple[tuple[int, int], float]:
    """((layer, head) of the top head, its share of the total |head attribution|): the carrier
    measure, ``max_h |a_h| / sum_h |a_h|`` over the item-mean head terms ``a``."""
    a = np.abs(np.asarray(heads, float))
    tot = a.sum()
    idx = np.unravel_index(int(np.argmax(a)), a.shape)
    return (int(idx[0]), int(idx[1])), float(a[idx] / tot) if tot > 0 else float("nan")
