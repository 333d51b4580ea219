"""Measures that must run the model: the carrier head's zero-ablation, its OV alignment at the cue,
and direction specificity (a fitted cue direction projected out of the residual stream).

Margins are the project's (``runner.scoring``: summed continuation log-probs; CM is the mean over
heldout conflict items), measured with hooks attached inside ``model.hooks(...)`` only
(:func:`mech.capture.scoped_hooks`).

- Carrier ablation: the top head (largest share of total |head attribution|,
  :func:`mech.decompose.head_share`) has ``hook_z`` zeroed at every position; the margin it
  deletes is ``CM - CM_ablated``.
- OV alignment: the head's value output at each conflict item's cue token, ``v_h(cue) @ W_O[h]``
  (the vector the head writes when it attends to the cue); per cue class the cosine of its mean
  with the mean read-out direction ``W_U[:, correct] - W_U[:, distractor]``; averaged over classes
  weighted by items. NaN when no conflict item has a cue in its prefix (``a_an`` families).
- Direction specificity: at depth ``k`` (``0``: ``blocks.0.hook_resid_pre``, ``k >= 1``:
  ``blocks.{k-1}.hook_resid_post``) the unit cue direction ``r`` (:func:`mech.decode.class_direction`)
  is projected out at every position, ``x <- x - (x . r) r``; reported: the target family's
  ``delta_cm = CM_projected - CM`` and the mean ``|delta CM|`` over the run's other families
  (``nontarget_mean_abs_delta``): a specific direction costs the target's margin, not the others'.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from runner.scoring import EncodedBattery, continuation_logprobs, encode_battery

from .attribution import ablation_hooks
from .names import hook_name
from .probes import ProbeTensors, RunContext
from .runtime import scoped_hooks

Hooks = list[tuple[str, Callable]]


Battery = tuple[EncodedBattery, np.ndarray]  # encoded conflict items, and each item's family


def conflict_battery(ctx: RunContext, families: list[str] | None = None, split: str = "heldout") -> Battery:
    """The ``split`` conflict items of ``families`` (default: every family of the run) encoded
    once for scoring, with each item's family: what CM needs, for all families in one pass."""
    keep = set(ctx.families if families is None else families)
    its = [it for it in ctx.items if it.family in keep and it.split == split and it.condition == "conflict"]
    enc = encode_battery(its, ctx.tokenizer, ctx.bos_id, ctx.cfg.model.n_ctx, pad_id=ctx.pad_id)
    return enc, np.array([it.family for it in its])


def cms(model, battery: Battery, hooks: Hooks | None = None) -> dict[str, float]:
    """CM (mean summed-continuation log-prob difference) per family of ``battery``, with ``hooks``."""
    enc, fams = battery
    with scoped_hooks(model, hooks or []):
        lpc, lpd = continuation_logprobs(model, enc)
    diff = lpc - lpd
    return {f: float(diff[fams == f].mean()) for f in dict.fromkeys(fams.tolist())}


def carrier_ablation(model, battery: Battery, head: tuple[int, int]) -> dict:
    """CM before and after zero-ablating ``head`` (every position) and the margin it deletes;
    ``battery``: one family's."""
    (before,) = cms(model, battery).values()
    (after,) = cms(model, battery, ablation_hooks([head], "zero")).values()
    return {"cm": before, "cm_ablated": after, "deleted": before - after,
            "deleted_fraction": (before - after) / before if abs(before) > 1e-9 else float("nan")}


@torch.no_grad()
def ov_alignment(model, probes: ProbeTensors, head: tuple[int, int], classes: np.ndarray) -> float:
    """Cosine of the head's mean OV output at the cue with the read-out direction (module docstring),
    over the items of ``probes`` that have a cue; ``classes``: their cue classes."""
    layer, h = head
    ok = (probes.cue_pos >= 0).numpy()
    if not ok.any():
        return float("nan")
    p = probes.subset(np.nonzero(ok)[0].tolist())
    name = hook_name("v", layer)
    _, cache = model.run_with_cache(p.tokens, names_filter=lambda n: n == name)
    v = cache[name][torch.arange(p.n), p.cue_pos, h]                      # (item, d_head)
    ov = (v @ model.W_O[layer, h].detach()).double().numpy()               # (item, d_model)
    W_U = model.W_U.detach().double().numpy()
    d = (W_U[:, p.correct_id.numpy()] - W_U[:, p.distractor_id.numpy()]).T
    cls = np.asarray(classes)[ok]
    cos, weights = [], []
    for c in sorted(set(cls.tolist())):
        a, b = ov[cls == c].mean(0), d[cls == c].mean(0)
        den = np.linalg.norm(a) * np.linalg.norm(b)
        if den > 0:
            cos.append(float(a @ b / den))
            weights.append(int((cls == c).sum()))
    return float(np.average(cos, weights=weights)) if cos else float("nan")


def depth_hook(depth: int) -> str:
    """The hook a depth's residual is read at and projected on (see the module docstring)."""
    return hook_name("resid_pre", 0) if depth == 0 else hook_name("resid_post", depth - 1)


def project_out_hooks(direction: Float[np.ndarray, " d_model"], depth: int) -> Hooks:
    """``x <- x - (x . r) r`` at every position of the depth's residual (``r`` unit norm)."""
    r = torch.as_tensor(np.asarray(direction), dtype=torch.float32)

    def fn(x: Tensor, hook) -> Tensor:
        rr = r.to(x.dtype)
        return x - (x @ rr)[..., None] * rr

    return [(depth_hook(depth), fn)]


def direction_specificity(model, battery: Battery, target: str, directions: dict[int, np.ndarray]) -> list[dict]:
    """Per depth: the target's CM and its change with the direction projected out, and every
    other family's change (see the module docstring). ``directions``: depth -> unit vector;
    ``battery``: every family's (:func:`conflict_battery`)."""
    base = cms(model, battery)
    rows = []
    for depth, r in sorted(directions.items()):
        delta = {f: v - base[f] for f, v in cms(model, battery, project_out_hooks(r, depth)).items()}
        others = [abs(v) for f, v in delta.items() if f != target]
        rows.append({"depth": depth, "hook": depth_hook(depth), "cm": base[target], "delta_cm": delta[target],
                     "nontarget": {f: v for f, v in delta.items() if f != target},
                     "nontarget_mean_abs_delta": float(np.mean(others)) if others else float("nan")})
    return rows
