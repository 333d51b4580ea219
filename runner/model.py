"""The model: a TransformerLens-native decoder built from a config, no downloads.

Two architectures (``ModelConfig.arch``), both wrapped as a ``TransformerBridge`` with the
classic hook names (``blocks.N.hook_resid_post``, ``blocks.N.attn.hook_z``, ``mlp.hook_post`` ...),
so every checkpoint is open to hooks as it is:

- ``tl``: ``TransformerBridge.boot_native`` (LayerNorm, learned positions, biases, GELU).
- ``nanochat``: the paper's decoder (Li & Sreedhar 2026, "nanochat-style"): rotary positions,
  weightless RMS norms (also on the token embedding and on queries and keys), no biases,
  ReLU² MLP, untied unembedding, value embeddings on alternating layers (the last one included)
  mixed into the values by two learned scalars per layer, zero-initialised output projections and
  unembedding. At 4 layers, d_model 256, vocab 8,192 it has 11,534,340 parameters (the paper's
  11.5M; ``count_params``). Attention runs as ``scaled_dot_product_attention`` unless a hook
  reads or edits ``hook_pattern`` (then the pattern is materialised and goes through the hook).

``ModelConfig.logit_soft_cap`` caps logits at ``cap * tanh(logits / cap)`` in either. Weights per
checkpoint are stored as safetensors and loaded back here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from runner._io import atomic_path
from runner.config import ModelConfig, RunConfig
from runner.hookpoints import is_hooked
from runner.store import RunDir

EPS = 1e-5  # every RMS norm of the nanochat decoder (the bridge recomputes its norms with cfg.eps)


def model_vocab(cfg: ModelConfig, d_vocab: int) -> int:
    """The embedding's rows: ``cfg.d_vocab`` (at least the tokenizer's ``d_vocab``) or ``d_vocab``."""
    if cfg.d_vocab is None:
        return d_vocab
    if cfg.d_vocab < d_vocab:
        raise ValueError(f"model.d_vocab ({cfg.d_vocab:,}) is smaller than the tokenizer's vocabulary "
                         f"({d_vocab:,}); raise model.d_vocab or leave it unset")
    return cfg.d_vocab


def build_model(cfg: ModelConfig, d_vocab: int, seed: int):
    """The model for ``cfg`` over a tokenizer of ``d_vocab`` tokens, initialised from ``seed``."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    torch.manual_seed(seed)
    extra: dict[str, Any] = {} if cfg.logit_soft_cap is None else {"output_logits_soft_cap": cfg.logit_soft_cap}
    if cfg.arch == "nanochat":
        extra = {**extra, "normalization_type": "RMSPre", "positional_embedding_type": "rotary", "eps": EPS}
    else:
        extra["normalization_type"] = "LN"
    tl_cfg = TransformerBridgeConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
        d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx, d_vocab=model_vocab(cfg, d_vocab), act_fn=cfg.act_fn,
        device="cpu", seed=seed, **extra,
    )
    if cfg.arch == "tl":
        bridge = TransformerBridge.boot_native(tl_cfg)  # pyright: ignore[reportAttributeAccessIssue] (added at import)
        if cfg.attention == "sdpa":
            from runner.attention import fuse_attention

            fuse_attention(bridge)
        return bridge
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    module = NanochatDecoder(cfg, tl_cfg.d_vocab)
    module.init_weights(seed)
    return build_bridge_from_module(module, "TransformerLensNative", tl_config=tl_cfg, model_name="nanochat")


# ---- the nanochat decoder ----------------------------------------------------------------------


def _rms(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=EPS)


class _RMSNorm(nn.Module):
    """Weightless RMS norm (TransformerLens' ``RMSPre``)."""

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        return _rms(hidden_states)


class _Step:
    """What one forward hands the attention layers besides the residual: per layer with value
    embeddings, the mixing scalars and the value embedding of the input tokens. A plain object,
    not a module (the parameters live on the decoder, outside the bridged blocks, so that the
    bridge's state dict holds them)."""

    def __init__(self) -> None:
        self.ve: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _has_ve(layer: int, n_layers: int) -> bool:
    """Value embeddings on alternating layers, the last one always included."""
    return layer % 2 == (n_layers - 1) % 2


class _Attention(nn.Module):
    accepts_pattern_fn = True  # the bridge passes its hook_pattern as pattern_fn
    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, cfg: ModelConfig, layer: int, step: _Step) -> None:
        super().__init__()
        d, self.n_heads, self.d_head, self.layer, self.step = cfg.d_model, cfg.n_heads, cfg.d_head, layer, step
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        half = self.d_head // 2
        freqs = torch.outer(torch.arange(cfg.n_ctx, dtype=torch.float32),
                            10000.0 ** (-torch.arange(half, dtype=torch.float32) / half))
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos[: x.shape[-2]].to(x.dtype), self.sin[: x.shape[-2]].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None, pattern_fn=None,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, _ = hidden_states.shape
        q, k, v = (m(hidden_states).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        if self.layer in self.step.ve:
            lam, ve = self.step.ve[self.layer]
            v = lam[0] * v + lam[1] * ve.view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        q, k = _rms(self._rotate(q)), _rms(self._rotate(k))
        pattern = None
        if is_hooked(pattern_fn) or attention_mask is not None:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
            mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
            if attention_mask is not None and attention_mask.dim() == 2:
                mask = mask | ~attention_mask.bool()[:, None, None, :]
            pattern = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1).masked_fill(mask, 0.0)
            if pattern_fn is not None:
                pattern = pattern_fn(pattern)
            y = pattern @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, -1)), pattern


_ACT = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "relu2": lambda x: F.relu(x).square()}


class _MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.act = _ACT[cfg.act_fn]

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(hidden_states)))


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, step: _Step) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = _RMSNorm(), _Attention(cfg, layer, step), _RMSNorm(), _MLP(cfg)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None,
                **kwargs) -> tuple[torch.Tensor]:
        attn_out, _ = self.attn(self.ln1(hidden_states), attention_mask=attention_mask, position_ids=position_ids)
        hidden_states = hidden_states + attn_out
        return (hidden_states + self.mlp(self.ln2(hidden_states)),)


class NanochatDecoder(nn.Module):
    """The paper's decoder (see the module docstring), laid out as TransformerLens' native model
    (``tok_embed``, ``layers.N.{ln1,attn.{q,k,v,o},ln2,mlp.{fc_in,fc_out}}``, ``ln_out``, ``head``)
    so that the native architecture adapter wraps it; ``value_embeds`` stays outside the bridge."""

    def __init__(self, cfg: ModelConfig, d_vocab: int) -> None:
        super().__init__()
        self.step = _Step()
        self.cap = cfg.logit_soft_cap
        self.tok_embed = nn.Embedding(d_vocab, cfg.d_model)
        ve_layers = [str(i) for i in range(cfg.n_layers) if _has_ve(i, cfg.n_layers)]
        self.value_embeds = nn.ModuleDict({i: nn.Embedding(d_vocab, cfg.d_model) for i in ve_layers})
        self.ve_lambdas = nn.ParameterDict({i: nn.Parameter(torch.full((2,), 0.5)) for i in ve_layers})
        self.layers = nn.ModuleList(_Block(cfg, i, self.step) for i in range(cfg.n_layers))
        self.ln_out = _RMSNorm()
        self.head = nn.Linear(cfg.d_model, d_vocab, bias=False)

    def init_weights(self, seed: int) -> None:
        """Embeddings N(0, 1); matrices N(0, fan_in^-1/2 * min(1, (fan_out/fan_in)^1/2)); output
        projections and the unembedding zero; value-embedding mixing scalars 0.5."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Embedding):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                elif isinstance(m, nn.Linear):
                    fan_out, fan_in = m.weight.shape
                    std = fan_in ** -0.5 * min(1.0, (fan_out / fan_in) ** 0.5)
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            blocks = [cast(_Block, b) for b in self.layers]
            for p in [self.head.weight, *(w for b in blocks for w in (b.attn.o.weight, b.mlp.fc_out.weight))]:
                p.zero_()
            for p in self.ve_lambdas.values():
                p.fill_(0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, position_ids=None, **kwargs) -> torch.Tensor:
        x = _rms(self.tok_embed(input_ids))
        self.step.ve = {int(i): (self.ve_lambdas[i], e(input_ids)) for i, e in self.value_embeds.items()}
        try:
            for block in self.layers:
                (x,) = block(x, attention_mask=attention_mask, position_ids=position_ids)
        finally:
            self.step.ve = {}
        logits = self.head(self.ln_out(x)).float()
        return logits if self.cap is None else self.cap * torch.tanh(logits / self.cap)


# ---- parameters and FLOPs ----------------------------------------------------------------------


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def param_group(name: str, ndim: int) -> str:
    """``matrix`` (a block's >= 2-D weight), ``embed`` (token, position, value embeddings),
    ``head`` (unembedding) or ``scalar`` (biases, norm scales, mixing scalars) for a parameter of
    the native layout (``_original_component`` segments are ignored)."""
    name = name.replace("._original_component", "")
    if name.startswith(("tok_embed.", "pos.", "value_embeds.")):
        return "embed"
    if name.startswith("head."):
        return "head"
    return "matrix" if name.startswith("layers.") and ndim >= 2 else "scalar"


def param_groups(model) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The model's trainable parameters by :func:`param_group`, in ``named_parameters`` order."""
    out: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embed": [], "head": [], "scalar": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[param_group(name, p.ndim)].append((name, p))
    return out


def count_params(cfg: ModelConfig, d_vocab: int) -> dict[str, int]:
    """Parameters per group without building the model (equal to :func:`param_groups`' sizes):
    ``matrix``, ``embed`` (``value_embed`` of it for nanochat), ``head``, ``scalar``, ``total``."""
    V, d, m, L = model_vocab(cfg, d_vocab), cfg.d_model, cfg.d_mlp, cfg.n_layers
    matrix = L * (4 * d * d + 2 * d * m)
    if cfg.arch == "nanochat":
        n_ve = sum(_has_ve(i, L) for i in range(L))
        out = {"matrix": matrix, "embed": V * d * (1 + n_ve), "value_embed": V * d * n_ve, "head": V * d,
               "scalar": 2 * n_ve}
    else:  # biases q k v o (4d), fc_in (m), fc_out (d); LN scale+bias 2 x 2d per block; ln_out 2d
        out = {"matrix": matrix, "embed": V * d + cfg.n_ctx * d, "head": V * d,
               "scalar": L * (4 * d + m + d + 4 * d) + 2 * d}
    out["total"] = out["matrix"] + out["embed"] + out["head"] + out["scalar"]
    return out


def flops_per_token(cfg: ModelConfig, d_vocab: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM's convention: 6 N + 12 L d_model T,
    N = the parameters in matrix products (every group but the embedding tables), T = the
    sequence length the attention runs over."""
    c = count_params(cfg, d_vocab)
    return 6.0 * (c["total"] - c["embed"]) + 12.0 * cfg.n_layers * cfg.d_model * seq_len


# ---- weights on disk ---------------------------------------------------------------------------


def weights_path(run_dir: str | Path, step: int) -> Path:
    """``RunDir(run_dir).weights(step)``."""
    return RunDir(run_dir).weights(step)


def save_weights(model, path: Path) -> None:
    """safetensors, written to a temporary name then renamed."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def load_model(run_dir: str | Path, step: int | None = None):
    """Rebuild a run's model and load its weights at ``step`` (default: the last checkpoint)."""
    import json

    from safetensors.torch import load_file

    run = RunDir(run_dir)
    cfg = RunConfig.model_validate_json(run.config.read_text())
    meta = json.loads(run.meta.read_text())
    if step is None:
        files = run.weight_files()
        if not files:
            raise FileNotFoundError(f"{run.path} has no checkpoints yet")
        path = files[-1]
    else:
        path = run.weights(step)
        if not path.exists():
            raise FileNotFoundError(f"{run.path}: no checkpoint at step {step}")
    model = build_model(cfg.model, meta["d_vocab"], cfg.train.seed)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model
