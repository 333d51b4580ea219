"""``model.attention = "sdpa"``: the tl architecture's attention as one fused kernel when no hook
looks (runner.attention), the same module otherwise."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from runner.attention import FusedNativeAttention
from runner.config import ModelConfig, RunConfig
from runner.model import build_model

VOCAB = 97


@pytest.fixture
def pair():
    torch.manual_seed(0)
    native = build_model(ModelConfig(), VOCAB, 3)
    fused = build_model(ModelConfig(attention="sdpa"), VOCAB, 3)
    return native, fused, torch.randint(0, VOCAB, (3, 40))


def _fused_calls(model, x) -> int:
    """How many layers of a forward called scaled_dot_product_attention (a torch function mode counts)."""
    calls = []

    class Count(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.scaled_dot_product_attention:
                calls.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        model(x)
    return len(calls)


def test_same_parameters_and_names_same_function_to_rounding(pair):
    native, fused, x = pair
    assert all(type(b.attn.original_component) is FusedNativeAttention for b in fused.blocks)
    a, b = native.state_dict(), fused.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(native.hook_dict) == sorted(fused.hook_dict)
    with torch.no_grad():
        diff = (native(x) - fused(x)).abs().max().item()
    assert 0 <= diff < 1e-4
    assert _fused_calls(fused, x) == 2 and _fused_calls(native, x) == 0


def test_gradients_match_to_rounding(pair):
    native, fused, x = pair
    for m in (native, fused):
        m(x).logsumexp(-1).mean().backward()
    for (name, p), q in zip(native.named_parameters(), fused.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("point", ["hook_pattern", "hook_attn_scores"])
def test_a_hook_on_the_pattern_or_scores_gets_the_explicit_kernel(pair, point):
    native, fused, x = pair
    name = f"blocks.1.attn.{point}"
    seen: dict[str, dict] = {"fused": {}, "native": {}}

    def keeper(which):
        def keep(t, hook):
            seen[which][hook.name] = t.detach().clone()
            return t
        return keep

    with fused.hooks(fwd_hooks=[(name, keeper("fused"))]):
        assert _fused_calls(fused, x[:, :5]) == 1  # layer 1 is watched: explicit; layer 0 still fused
        out = fused(x)
    with native.hooks(fwd_hooks=[(name, keeper("native"))]):
        ref = native(x)
    got, want = seen["fused"][name], seen["native"][name]
    assert got.shape == want.shape == (3, 4, 40, 40)
    assert (got - want).abs().max().item() < 1e-5  # layer 0's rounding differs; the kernel at layer 1 is the same
    # the layer with the hook ran the explicit kernel, the other still fused: outputs differ by rounding only
    assert (out - ref).abs().max().item() < 1e-4
    # hooks are removed on exit: the fused kernel is back
    assert _fused_calls(fused, x) == 2


def test_a_pattern_edit_through_the_hook_takes_effect_identically(pair):
    native, fused, x = pair

    def uniform(t, hook):  # attend uniformly over the causal past
        mask = torch.ones(t.shape[-2:], dtype=torch.bool).tril()
        return mask / mask.sum(-1, keepdim=True) * torch.ones_like(t)

    hooks = [(f"blocks.{i}.attn.hook_pattern", uniform) for i in range(2)]
    with torch.no_grad(), native.hooks(fwd_hooks=hooks), fused.hooks(fwd_hooks=hooks):
        assert torch.equal(native(x), fused(x))  # every layer hooked: both run TransformerLens's kernel


def test_deepcopy_keeps_each_layer_tied_to_its_own_hook(pair):
    _, fused, _ = pair
    twin = copy.deepcopy(fused)
    for b, orig in zip(twin.blocks, fused.blocks):
        assert b.attn.original_component.scores_hook is b.attn.hook_attn_scores
        assert b.attn.original_component.scores_hook is not orig.attn.hook_attn_scores


def test_the_field_names_a_new_run_and_only_for_tl():
    base = RunConfig()
    fused = RunConfig(model={"attention": "sdpa"})
    assert base.run_id == RunConfig(model={"attention": "native"}).run_id  # older runs keep their ids
    assert fused.run_id != base.run_id
    with pytest.raises(ValidationError, match="attention 'sdpa' is for arch 'tl'"):
        ModelConfig(arch="nanochat", act_fn="relu2", attention="sdpa")
