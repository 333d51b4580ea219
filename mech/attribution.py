"""Per-checkpoint measurements on one model: direct logit attribution, activation patching,
attention to the cue and to the competitor's evidence, the embedding-level scalar, ablations.

All of them read the *logit difference* at the prediction position,
``LD = logit[correct] - logit[distractor]`` (at the decision site: the first continuation tokens
that differ, :mod:`mech.positions`); on conflict items
correct is the rule's answer and distractor the competitor's, so LD > 0 while the rule wins and
``-LD`` is the pull towards the competitor.

Direct logit attribution (DLA). The final residual at the prediction position is a sum of
components: token and position embedding, every head's output ``z_h @ W_O[h]``, each layer's
attention bias ``b_O``, each MLP's output. The final LayerNorm is affine once its scale is fixed
at the value of this forward (``ln(x) = (x - mean x) / scale * w + b``), so each component ``c``
contributes ``((c - mean c) / scale) . (w * (W_U[:, correct] - W_U[:, distractor]))`` and the
constant ``b . (W_U[:, correct] - W_U[:, distractor]) + b_U[correct] - b_U[distractor]`` makes
the sum equal LD exactly (the ``bias`` component). RMSNorm models: no centring, no ``b``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from runner.scoring import continuation_logprobs
from runner.world.rules import RULES

from .capture import capture_probes, hook_count, scoped_hooks
from .names import hook_name, source_hook
from .probes import ProbeTensors, _ids_offsets

DLA_KINDS = ("embed", "pos_embed", "result", "mlp_out", "ln_final_scale", "unembed")


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def component_labels(model) -> list[str]:
    """DLA components in a fixed order: embed, pos_embed, then per layer its heads, ``L{l}.b_O``
    and ``MLP{l}``, then ``bias`` (final LayerNorm bias and unembedding bias)."""
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    out = ["embed"] + (["pos_embed"] if source_hook("pos_embed") in model.hook_dict else [])
    for layer in range(L):
        out += [head_label(layer, h) for h in range(H)] + [f"L{layer}.b_O", f"MLP{layer}"]
    return out + ["bias"]


def _ln_final(model) -> tuple[Tensor, Tensor | None, bool]:
    ln = model.ln_final
    w = ln.weight.detach().float()
    b = getattr(ln, "bias", None)
    b = None if b is None else b.detach().float()
    rms = str(model.cfg.normalization_type or "").upper().startswith("RMS")
    return w, b, rms


@torch.no_grad()
def direct_logit_attribution(model, probes: ProbeTensors, batch_size: int = 64
                             ) -> tuple[list[str], Float[np.ndarray, "item component"], Float[np.ndarray, " item"]]:
    """(labels, per-item contribution of every component to LD, LD itself).

    ``contrib.sum(-1) == LD`` up to float32 rounding (see the module docstring)."""
    got = capture_probes(model, probes, DLA_KINDS, batch_size)
    labels = component_labels(model)
    w, b, rms = _ln_final(model)
    W_U = model.W_U.detach().float()
    b_U = model.b_U.detach().float() if getattr(model, "b_U", None) is not None else torch.zeros(W_U.shape[1])
    d = (W_U[:, probes.correct_id] - W_U[:, probes.distractor_id]).T  # (item, d_model)
    wd = d * w                                                            # (item, d_model)
    scale = torch.from_numpy(got["ln_final_scale"])[:, None]              # (item, 1)
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    b_O = model.b_O.detach().float()                                      # (layer, d_model)
    n = probes.n

    def through(x: Tensor) -> Tensor:  # (item, d_model) -> (item,)
        if not rms:
            x = x - x.mean(-1, keepdim=True)
        return ((x / scale) * wd).sum(-1)

    cols: list[Tensor] = [through(torch.from_numpy(got["embed"]))]
    if "pos_embed" in got and "pos_embed" in labels:
        cols.append(through(torch.from_numpy(got["pos_embed"])))
    res = torch.from_numpy(got["result"])   # (item, layer, head, d_model)
    mlp = torch.from_numpy(got["mlp_out"])  # (item, layer, d_model)
    for layer in range(L):
        for h in range(H):
            cols.append(through(res[:, layer, h]))
        cols.append(through(b_O[layer].expand(n, -1)))
        cols.append(through(mlp[:, layer]))
    const = (d * b).sum(-1) if b is not None else torch.zeros(n)
    const = const + b_U[probes.correct_id] - b_U[probes.distractor_id]
    cols.append(const)
    contrib = torch.stack(cols, -1).numpy()
    ld = got["unembed"][:, 0] - got["unembed"][:, 1]
    return labels, contrib, ld


@contextmanager
def _quiet_patching() -> Iterator[Any]:
    """``transformer_lens.patching`` with its progress bar off (restored on exit)."""
    import importlib

    P: Any = importlib.import_module("transformer_lens.patching")
    orig = P.tqdm
    P.tqdm = lambda it, *a, **k: it
    try:
        yield P
    finally:
        P.tqdm = orig


def _ld_metric(probes: ProbeTensors) -> Callable[[Tensor], Tensor]:
    b = torch.arange(probes.n)

    def metric(logits: Tensor) -> Tensor:
        last = logits[b, probes.pred_pos]
        return (last[b, probes.correct_id] - last[b, probes.distractor_id]).mean()

    return metric


@torch.no_grad()
def patch_evidence(model, conflict: ProbeTensors, switched: ProbeTensors) -> dict[str, np.ndarray | float]:
    """Activation patching between matched prompts that differ only in the competitor's evidence.

    Clean run: the conflict items (the earlier answer is the competitor's). Corrupted run: the
    same items with that answer switched to the rule's. Each component's clean activation is
    patched into the corrupted run (``transformer_lens.patching``; heads: ``hook_z`` at every
    position; layers: ``hook_attn_out`` and ``hook_mlp_out`` at every position) and mean LD is
    read. ``effect = LD_patched - LD_switched``: negative where a component carries the
    competitor's evidence to the prediction (patching it alone moves LD towards the conflict
    value). Returns ``heads (layer, head)``, ``attn_out (layer,)``, ``mlp_out (layer,)`` effects
    and the two baselines ``ld_conflict``, ``ld_switched``.
    """
    if conflict.tokens.shape != switched.tokens.shape:
        raise ValueError("matched prompts must have the same token shape")
    metric = _ld_metric(switched)
    before = hook_count(model)
    _, clean_cache = model.run_with_cache(conflict.tokens, names_filter=lambda n: n.endswith(
        ("attn.hook_z", "hook_attn_out", "hook_mlp_out")))
    ld_conflict = float(_ld_metric(conflict)(model(conflict.tokens)))
    ld_switched = float(metric(model(switched.tokens)))
    with _quiet_patching() as P:
        heads = P.get_act_patch_attn_head_out_all_pos(model, switched.tokens, clean_cache, metric)
        whole = lambda corrupted, index, clean: clean  # noqa: E731  (the layer's whole output)
        layers = {}
        for name in ("attn_out", "mlp_out"):
            layers[name] = P.generic_activation_patch(model, switched.tokens, clean_cache, metric, whole, name,
                                                      index_axis_names=("layer",))
    if hook_count(model) != before:
        raise RuntimeError("activation patching left hooks attached")
    return {"heads": heads.numpy() - ld_switched, "attn_out": layers["attn_out"].numpy() - ld_switched,
            "mlp_out": layers["mlp_out"].numpy() - ld_switched, "ld_conflict": ld_conflict,
            "ld_switched": ld_switched}


@torch.no_grad()
def attention_to_cue_and_evidence(model, probes: ProbeTensors, batch_size: int = 64
                                  ) -> tuple[Float[np.ndarray, "layer head"], Float[np.ndarray, "layer head"]]:
    """Mean attention from the prediction position to the cue token and to the competitor's
    evidence token, per layer and head (items with an unlocated position are left out)."""
    got = capture_probes(model, probes, ("pattern",), batch_size)["pattern"]  # (item, layer, head, key)
    out = []
    for pos in (probes.cue_pos, probes.evidence_pos):
        ok = (pos >= 0).numpy()
        if not ok.any():
            out.append(np.full(got.shape[1:3], np.nan))
            continue
        idx = pos.numpy()[ok]
        out.append(got[ok][np.arange(ok.sum()), :, :, idx].mean(0))
    return out[0], out[1]


@torch.no_grad()
def embedding_alignment(model, family: str, tokenizer) -> float:
    """cos(mean cue embedding of class A - of class B, W_U[:, rule(A)] - W_U[:, rule(B)]).

    Classes in the family's declared order; only cue words that are one token (with or without
    a leading space) count. NaN if a class has none or the family is unknown."""
    if family not in RULES:
        return float("nan")
    fam = RULES.get(family)
    classes = list(fam.cue_classes)
    if len(classes) != 2:
        return float("nan")

    def one_token(word: str) -> int | None:
        for text in (word, " " + word):
            ids, _ = _ids_offsets(tokenizer, text)
            if len(ids) == 1:
                return ids[0]
        return None

    W_E, W_U = model.W_E.detach().float(), model.W_U.detach().float()
    means, ans = [], []
    for cls in classes:
        ids = [i for i in (one_token(w) for w in fam.cue_classes[cls]) if i is not None]
        a = one_token(fam.rule_answer[cls])
        if not ids or a is None:
            return float("nan")
        means.append(W_E[ids].mean(0))
        ans.append(W_U[:, a])
    return float(torch.nn.functional.cosine_similarity(means[0] - means[1], ans[0] - ans[1], dim=0))


# ---- ablation ---------------------------------------------------------------------------------
@torch.no_grad()
def mean_z(model, probes: ProbeTensors) -> Float[Tensor, "layer head d_head"]:
    """Mean ``hook_z`` per head over every real (non-padding) position of ``probes``."""
    L = int(model.cfg.n_layers)
    mask = (torch.arange(probes.tokens.shape[1])[None] <= probes.pred_pos[:, None]).float()  # (item, pos)
    _, cache = model.run_with_cache(probes.tokens, names_filter=lambda n: n.endswith("attn.hook_z"))
    out = [(cache[hook_name("z", layer)] * mask[:, :, None, None]).sum((0, 1)) / mask.sum() for layer in range(L)]
    return torch.stack(out)


def ablation_hooks(heads: list[tuple[int, int]], mode: str, means: Tensor | None = None
                   ) -> list[tuple[str, Callable]]:
    """Forward hooks on ``hook_z`` that zero (``mode="zero"``) or mean-ablate (``"mean"``, with
    ``means`` from :func:`mean_z`) the given (layer, head) pairs at every position."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be 'zero' or 'mean', got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs the per-head means")
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(int(layer), []).append(int(h))
    hooks = []
    for layer, hs in sorted(by_layer.items()):
        def fn(z, hook, hs=hs, layer=layer):
            z = z.clone()
            for h in hs:
                z[:, :, h] = 0.0 if means is None else means[layer, h].to(z.dtype)
            return z
        hooks.append((hook_name("z", layer), fn))
    return hooks


def margins_under(model, enc, items, hooks: list[tuple[str, Callable]]) -> dict[str, float]:
    """The project's margins (``runner.scoring``: summed continuation log-probs) with ``hooks``
    attached for the duration: CM on heldout conflict items, the agree-item margin (control),
    conflict accuracy. Hooks are scoped and checked removed."""

    with scoped_hooks(model, hooks):
        lpc, lpd = continuation_logprobs(model, enc)
    diff = lpc - lpd
    cond = np.array([it.condition for it in items])
    split = np.array([it.split for it in items])
    c = (cond == "conflict") & (split == "heldout")
    a = (cond == "agree") & (split == "heldout")
    return {"cm": float(diff[c].mean()), "acc_conflict": float((diff[c] > 0).mean()),
            "agree_margin": float(diff[a].mean()) if a.any() else float("nan"),
            "acc_agree": float((diff[a] > 0).mean()) if a.any() else float("nan")}
