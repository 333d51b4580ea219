"""The model: a TransformerLens-native decoder built from a config, no downloads.

``TransformerBridge.boot_native`` gives an ``nn.Module`` with the classic hook names
(``blocks.N.hook_resid_post``, ``blocks.N.attn.hook_z`` ...), so every checkpoint is open to
hooks as it is. Weights per checkpoint are stored as safetensors and loaded back here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runner._io import atomic_path
from runner.config import ModelConfig, RunConfig
from runner.store import RunDir


def build_model(cfg: ModelConfig, d_vocab: int, seed: int):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    torch.manual_seed(seed)
    tl_cfg = TransformerBridgeConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
        d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx, d_vocab=d_vocab, act_fn=cfg.act_fn,
        normalization_type="LN", device="cpu", seed=seed,
    )
    return TransformerBridge.boot_native(tl_cfg)  # pyright: ignore[reportAttributeAccessIssue] (added at import)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


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
