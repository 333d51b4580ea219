"""A run's optimizer and its learning-rate / weight-decay schedule, from ``OptimConfig``.

Groups (``runner.model.param_group``): ``matrix`` (the blocks' 2-D weights), ``embed`` (token,
position and value embeddings), ``head`` (unembedding), ``scalar`` (the rest). A default config
(AdamW, one learning rate, weight decay on everything) builds the one-group ``AdamW`` it always
did, so its runs and their resume checkpoints are unchanged; otherwise each non-empty group is a
parameter group with its own learning rate and weight decay, and ``name = "muon"`` steps the
``matrix`` group with ``torch.optim.Muon`` and the others with AdamW (:class:`MuonAdamW`, one
optimizer for DeepSpeed).

The schedule is a pure function of the update index s = 0 .. S-1 (the update that turns the
model after s updates into the one after s + 1), :func:`lr_factor` and :func:`wd_factor`;
:class:`Schedule` applies both to every group before each update.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from runner.config import PARAM_GROUPS, OptimConfig
from runner.model import param_groups


def warmdown_start(o: OptimConfig, total: int) -> int:
    """The first update of the cosine warm-down (``total`` when there is none)."""
    return total - round(o.warmdown_frac * total)


def lr_factor(o: OptimConfig, step: int, total: int) -> float:
    """Multiplier of every group's learning rate at update ``step`` of ``total``: linear warm-up
    ``min(1, (s + 1) / warmup)``, times ``((1 + cos(pi (s - s0) / (S - s0))) / 2) ** warmdown_power``
    from the warm-down start s0 = S - round(warmdown_frac S) on (power 1: the plain cosine)."""
    f = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
    start = warmdown_start(o, total)
    if start <= step and start < total:
        f = f * (0.5 * (1.0 + math.cos(math.pi * (step - start) / (total - start)))) ** o.warmdown_power
    return f


def wd_factor(o: OptimConfig, step: int, total: int) -> float:
    """Multiplier of the weight decay at update ``step``: 1, or ``1 - s / S`` when linear."""
    return 1.0 if o.weight_decay_schedule == "constant" else 1.0 - step / total


def grouped(o: OptimConfig) -> bool:
    """Does ``o`` need parameter groups (Muon, a group's own lr, weight decay on some groups)?"""
    return (o.name != "adamw" or any(getattr(o, f"{g}_lr") is not None for g in PARAM_GROUPS)
            or set(o.weight_decay_groups) != set(PARAM_GROUPS))


def group_lr(o: OptimConfig, group: str) -> float:
    own = getattr(o, f"{group}_lr")
    return o.lr if own is None else own


class MuonAdamW(torch.optim.Optimizer):
    """Several optimizers stepped as one (DeepSpeed takes one client optimizer): its
    ``param_groups`` are theirs (the same dicts), its state dict holds theirs."""

    def __init__(self, *parts: torch.optim.Optimizer) -> None:
        self.parts = parts
        super().__init__([g for o in parts for g in o.param_groups], {})

    @torch.no_grad()
    def step(self, closure=None):  # pyright: ignore[reportIncompatibleMethodOverride]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.parts:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # pyright: ignore[reportIncompatibleMethodOverride]
        return {"parts": [o.state_dict() for o in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # pyright: ignore[reportIncompatibleMethodOverride]
        for o, s in zip(self.parts, state_dict["parts"], strict=True):
            o.load_state_dict(s)
        self.param_groups = [g for o in self.parts for g in o.param_groups]  # loading made new dicts


def build_optimizer(o: OptimConfig, model) -> torch.optim.Optimizer:
    """The optimizer of ``o`` over ``model``'s parameters (see the module docstring); the
    ``matrix`` group, when there is one, comes first (``train/lr`` logs the first group's)."""
    if not grouped(o):
        return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    params = param_groups(model)

    def group(name: str) -> dict[str, Any]:
        return {"params": [p for _, p in params[name]], "lr": group_lr(o, name), "group": name,
                "weight_decay": o.weight_decay if name in o.weight_decay_groups else 0.0}

    rest = [group(n) for n in PARAM_GROUPS[1:] if params[n]]
    if o.name == "adamw":
        return torch.optim.AdamW(([group("matrix")] if params["matrix"] else []) + rest, betas=o.betas)
    if not params["matrix"]:
        raise ValueError("optim.name 'muon': the model has no block matrices to apply Muon to; use adamw")
    muon = torch.optim.Muon([group("matrix")], momentum=o.muon_momentum, nesterov=True, adjust_lr_fn="original")
    return MuonAdamW(muon, torch.optim.AdamW(rest, betas=o.betas)) if rest else muon


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` so that their global 2-norm is at most ``max_norm``; returns
    the norm. The arithmetic of DeepSpeed's ``clip_grad_norm_`` on one process, bit for bit: each
    gradient's norm in fp32, ``sqrt(sum of squares)`` of those, then every gradient times
    ``min(1, max_norm / (norm + 1e-6))`` (also when that is 1); without its all-reduce over a group
    of one and its per-call list building."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.stack([g.detach().float().norm(2.0) for g in grads]).pow(2.0).sum().float().pow(0.5)
    one, cap = torch.tensor([1.0], device=total.device), torch.tensor([float(max_norm)], device=total.device)
    coef = torch.min(one, cap / (total + 1e-6))
    for g in grads:
        g.mul_(coef)
    return total


class Schedule(torch.optim.lr_scheduler.LRScheduler):
    """Sets every group's learning rate (``initial_lr * lr_factor``) and weight decay
    (``initial_weight_decay * wd_factor``) for the next update; DeepSpeed steps it after each
    update and saves it with the resume state. Its state is plain numbers (picklable)."""

    def __init__(self, optimizer: torch.optim.Optimizer, o: OptimConfig, total: int) -> None:
        self.o, self.total = o, total
        for g in optimizer.param_groups:
            g.setdefault("initial_weight_decay", g["weight_decay"])
        super().__init__(optimizer)

    def get_lr(self) -> list[float | torch.Tensor]:
        s = self.last_epoch
        if self.o.weight_decay_schedule != "constant":
            w = wd_factor(self.o, s, self.total)
            for g in self.optimizer.param_groups:
                g["weight_decay"] = g["initial_weight_decay"] * w
        f = lr_factor(self.o, s, self.total)
        return [base * f for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "o"} | {"o": self.o.model_dump(mode="json")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        state.pop("o", None)  # the config is this run's; a checkpoint made before it existed has none
        state.pop("lr_lambdas", None)  # a checkpoint of the LambdaLR this class replaced
        super().load_state_dict(state)
