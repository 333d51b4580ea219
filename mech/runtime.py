"""Running a checkpoint: torch threads for a scope, forward hooks scoped to a context manager that
checks they are all removed, and a checkpoint's weights copied into an already built model.

Every ``mech`` routine that attaches hooks goes through :func:`scoped_hooks` (TransformerLens
``model.hooks(...)``, which removes exactly the hooks it added); :func:`hook_count` is how the
scope checks it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import load_file

from runner._io import write_json_atomic
from runner.model import weights_path


def hook_count(model) -> int:
    """Number of forward/backward hooks currently attached to the model's hook points."""
    points = {id(hp): hp for hp in model.hook_dict.values()}  # aliases share one HookPoint
    return sum(len(hp._forward_hooks) + len(hp._backward_hooks) + len(getattr(hp, "_forward_pre_hooks", {}))
               for hp in points.values())


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the scope (None: leave as is). On a shared CPU, 2 threads
    of a tiny model ran 40x slower than 1 (contention), so mech defaults to 1 like training."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def scoped_hooks(model, fwd_hooks: list[tuple[str, Callable]]) -> Iterator[None]:
    """``model.hooks(fwd_hooks)``, checked: on exit the hook count is back where it was."""
    before = hook_count(model)
    try:
        with model.hooks(fwd_hooks=fwd_hooks, reset_hooks_end=True):
            yield
    finally:
        after = hook_count(model)
        if after != before:
            raise RuntimeError(f"hooks leaked: {after - before} left attached after the scope")


def merge_family_results(out_dir: Path, name: str, run_id: str, results: dict) -> tuple[Path, dict]:
    """Merge ``{family: result}`` into ``<out_dir>/mech/<name>`` (a file written for another run
    id is replaced, not merged), atomically; returns the path and the merged document."""
    path = out_dir / "mech" / name
    doc = json.loads(path.read_text()) if path.exists() else {}
    if doc.get("run_id") != run_id:
        doc = {}
    doc.setdefault("families", {}).update(results)
    doc["run_id"] = run_id
    return write_json_atomic(path, doc), doc


def load_weights(model, run_dir: str | Path, step: int) -> None:
    """Load checkpoint ``step`` of a run into ``model`` in place (a model built by
    ``runner.model.load_model`` for the same run). When every tensor of the file is a whole
    parameter or buffer of the model (the bridge's ``state_dict`` entries are views of them), the
    tensors are copied in directly, ~10x faster than the bridge's ``load_state_dict`` (which
    ``runner.model.load_model`` uses, and this falls back to otherwise)."""
    sd = load_file(str(weights_path(run_dir, step)))
    own = model.state_dict()
    whole = {t.data_ptr(): t.numel() for t in (*model.parameters(), *model.buffers())}
    if set(sd) == set(own) and all(own[k].shape == v.shape and whole.get(own[k].data_ptr()) == own[k].numel()
                                   for k, v in sd.items()):
        with torch.no_grad():
            for k, v in sd.items():
                own[k].copy_(v)
    else:
        model.load_state_dict(sd)
