"""Whether anyone is looking: the one test of a hook point's hooks that the models' fast paths use
(``runner.model``'s nanochat attention, ``runner.attention``'s fused TransformerLens attention)."""

from __future__ import annotations

from torch import nn


def is_hooked(point) -> bool:
    """Does a caller read or edit activations at ``point`` (a HookPoint)? None: no. A callable
    that is not a module (a pattern function handed in directly) counts as a hook."""
    if point is None:
        return False
    if not isinstance(point, nn.Module):
        return True
    return bool(point._forward_hooks or point._forward_pre_hooks or point._backward_hooks)
