"""``model.attention = "sdpa"`` for the ``tl`` architecture: TransformerLens's native attention run
as one fused ``torch.nn.functional.scaled_dot_product_attention`` call whenever nobody looks.

TransformerLens's ``NativeAttention`` materialises the attention scores (batch × heads × pos × pos),
masks them, softmaxes, masks again and multiplies by the values: on the default small model that
is about a fifth of a CPU training step (``bench/RESULTS.md``). :class:`FusedNativeAttention` is the
same module (same parameters, state dict, hook names) whose forward calls the fused kernel instead
when **no hook is attached to the layer's** ``hook_pattern`` **or** ``hook_attn_scores``, no
attention mask is passed and the layer is plain causal attention (no rotary, soft-cap or grouped
heads); otherwise it runs TransformerLens's own forward, so every hook sees the pattern it always
saw. The fused path returns no pattern, so the bridge fires no pattern hook for it (none is
attached, by the condition above).

The two kernels compute the same function and differ by float rounding (a training loss 4.8e-7
apart after 320 steps, measured): over thousands of steps trajectories drift apart, so the choice is
a config field (it enters the run id), and ``native`` stays the default for the runs named before it.
"""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.model_bridge.sources.native.model import NativeAttention

from runner.hookpoints import is_hooked


class FusedNativeAttention(NativeAttention):
    """``NativeAttention`` with the fused kernel when unobserved (module docstring). Made by
    :func:`fuse_attention` from a built bridge; never constructed directly."""

    scores_hook: nn.Module | None = None  # the bridge's hook_attn_scores, not a submodule (see fuse_attention)

    def _fusable(self, attention_mask, pattern_fn) -> bool:
        return (attention_mask is None and self.causal and self.rotary is None and self.kv_repeats == 1
                and self.attn_scores_soft_cap <= 0 and not is_hooked(pattern_fn)
                and not is_hooked(self.scores_hook))

    def forward(self, hidden_states: Float[Tensor, "batch pos d_model"], attention_mask=None, position_ids=None,
                pattern_fn=None, **kwargs) -> tuple[Float[Tensor, "batch pos d_model"], Tensor | None]:
        if not self._fusable(attention_mask, pattern_fn):
            return super().forward(hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                   pattern_fn=pattern_fn, **kwargs)
        b, t, _ = hidden_states.shape
        q, k, v = (m(hidden_states).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / self.scale)
        return self.o(y.transpose(1, 2).reshape(b, t, -1)), None


def fuse_attention(bridge) -> None:
    """Turn every block's ``NativeAttention`` of ``bridge`` (a ``TransformerBridge.boot_native``
    model) into a :class:`FusedNativeAttention`, in place. Only the class changes: parameters,
    buffers, state-dict keys and hook points stay as they were. Each layer keeps a plain reference
    to its bridge's ``hook_attn_scores`` (set with ``object.__setattr__`` so that it is not
    registered as a second parent of the hook point)."""
    for block in bridge.blocks:
        native = block.attn.original_component
        if type(native) is not NativeAttention:
            raise TypeError(f"expected TransformerLens's NativeAttention, got {type(native).__name__}")
        native.__class__ = FusedNativeAttention
        object.__setattr__(native, "scores_hook", block.attn.hook_attn_scores)
