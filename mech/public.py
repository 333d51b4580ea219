"""Public checkpoint series (Pythia, or any GPT-NeoX-style suite saved by revision), scored with the
same batteries, margins, classifier and report as trained runs.

Method. Each (model, revision) is resolved by a :class:`Source` to a local folder in Hugging Face
``save_pretrained`` form and a commit hash, loaded into TransformerLens with
``TransformerBridge.boot_transformers(folder)`` (its own tokenizer), and scored on the battery
with :func:`runner.scoring.continuation_logprobs` exactly like a trained checkpoint. Per-revision
results are kept as small files (the unit of resume); a model's "run" folder is then assembled
from them in step order: ``config.json``, ``run.json`` (identity, parameter count, commits),
``store.zarr`` in the trained-run layout (so ``ungrok show``, ``verdict`` and ``report`` read it
unchanged) and ``summary.json``.

Sources: ``local:<dir>`` is a mirror laid out ``<dir>/<model>/<revision>/`` (each a
``save_pretrained`` folder of model and tokenizer); ``hub`` / ``hub:<org>`` resolves
``<org>/<model>`` at ``revision`` with ``huggingface_hub.snapshot_download`` (it honours
``HF_HUB_OFFLINE`` and the HF cache, so a pre-downloaded cache works offline) and records the
snapshot's commit. Both sources feed the same loading and scoring code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner._io import atomic_path, write_json_atomic
from runner.scoring import aggregate, continuation_logprobs, encode_battery
from runner.store import RunStore
from runner.trajectory import write_summary
from runner.world.batteries import ProbeItem, read_battery

PYTHIA_MODELS = ("pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b")
_STEP = re.compile(r"^step(\d+)$")


class PublicError(ValueError):
    """A model, revision or source cannot be used; the message says which and what to do."""


def pythia_revisions() -> list[str]:
    """Pythia's published schedule: step 0, log-spaced 1-512, then every 1,000 to 143,000."""
    return ["step0"] + [f"step{2 ** i}" for i in range(10)] + [f"step{s}" for s in range(1000, 143_001, 1000)]


def parse_revisions(spec: str) -> list[str]:
    """``step0,step1000,...`` as given; ``pythia`` for the whole schedule; ``pythia:N`` for N
    revisions spread evenly over it (first and last included)."""
    spec = spec.strip()
    if spec == "pythia":
        return pythia_revisions()
    if spec.startswith("pythia:"):
        full = pythia_revisions()
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise PublicError(f"revisions {spec!r}: write pythia:N with N an integer, e.g. pythia:12") from None
        if not 2 <= n <= len(full):
            raise PublicError(f"revisions {spec!r}: N must be between 2 and {len(full)}")
        idx = sorted({round(i * (len(full) - 1) / (n - 1)) for i in range(n)})
        return [full[i] for i in idx]
    revs = [r.strip() for r in spec.split(",") if r.strip()]
    if not revs:
        raise PublicError("revisions: give a comma-separated list (step0,step1000), pythia or pythia:N")
    for r in revs:
        revision_step(r)
    if len(set(revs)) != len(revs):
        raise PublicError(f"revisions: {spec!r} lists a revision twice")
    return revs


def revision_step(revision: str) -> int:
    m = _STEP.match(revision)
    if not m:
        raise PublicError(f"revision {revision!r}: expected step<N> (Pythia's branch names), e.g. step1000")
    return int(m.group(1))


@dataclass(frozen=True)
class Source:
    """Where checkpoints come from: ``local:<dir>`` or ``hub[:<org>]`` (default org EleutherAI)."""

    spec: str

    def __post_init__(self) -> None:
        kind = self.spec.split(":", 1)[0]
        if kind not in ("local", "hub") or (kind == "local" and not self.spec[6:]):
            raise PublicError(f"source {self.spec!r}: use local:<dir> (a mirror <dir>/<model>/<revision>/) "
                              "or hub[:<org>]")

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    def resolve(self, model: str, revision: str) -> tuple[Path, str]:
        """(folder in save_pretrained form, commit hash) of one checkpoint."""
        if self.kind == "local":
            folder = Path(self.spec[6:]) / model / revision
            if not (folder / "config.json").exists():
                raise PublicError(f"{model} @ {revision}: no checkpoint at {folder} (expected a save_pretrained "
                                  "folder with config.json); check the mirror layout <dir>/<model>/<revision>/")
            return folder, "sha256:" + _folder_hash(folder)
        from huggingface_hub import snapshot_download

        org = self.spec[4:] or "EleutherAI"
        try:
            folder = Path(snapshot_download(f"{org}/{model}", revision=revision,
                                            cache_dir=os.environ.get("HF_HUB_CACHE")))  # read per call
        except Exception as e:  # offline without a cached snapshot, unknown revision, no network
            raise PublicError(f"{org}/{model} @ {revision}: {type(e).__name__}: {str(e)[:300]}") from None
        return folder, folder.name  # the snapshot folder is named by its commit


def _folder_hash(folder: Path) -> str:
    """sha256 over the folder's files (names and bytes), in name order."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def load_checkpoint(folder: Path):
    """The checkpoint as a TransformerBridge (eval mode) and its tokenizer; no network."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)
    bridge.eval()
    return bridge, bridge.tokenizer


def score_revision(model: str, revision: str, source: str, battery: str, out_dir: str,
                   batch_size: int = 64) -> dict:
    """Score one (model, revision) and keep the result in ``<out>/<model>/revisions/<rev>.npz``
    (written atomically; an existing file is reused). The Ray task body of ``ungrok public``."""
    dest = Path(out_dir) / model / "revisions" / f"{revision}.npz"
    if dest.exists():
        return _meta(dest)
    folder, commit = Source(source).resolve(model, revision)
    items = read_battery(battery)
    bridge, tok = load_checkpoint(folder)
    bos = tok.bos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    enc = encode_battery(items, tok, bos, int(bridge.cfg.n_ctx), pad_id=int(pad))
    lpc, lpd = continuation_logprobs(bridge, enc, batch_size=batch_size)
    n_params = int(sum(p.numel() for p in bridge.parameters()))
    meta = {"model": model, "revision": revision, "step": revision_step(revision), "commit": commit,
            "folder": str(folder), "n_params": n_params, "source": source}
    with atomic_path(dest) as tmp:
        np.savez(tmp, lp_correct=lpc, lp_distractor=lpd, meta=json.dumps(meta))
    return meta


def _meta(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def assemble_run(out_dir: str | Path, model: str, battery: str, families: list[str] | None = None) -> Path:
    """(Re)build ``<out>/<model>/`` as a run folder from its scored revisions, in step order.

    The store is written to a temporary folder and renamed into place, so a reader never sees a
    half-written store."""
    import shutil


    run_dir = Path(out_dir) / model
    files = sorted((run_dir / "revisions").glob("step*.npz"), key=lambda p: revision_step(p.stem))
    if not files:
        raise PublicError(f"{model}: no scored revisions under {run_dir / 'revisions'}")
    items: list[ProbeItem] = read_battery(battery)
    keep = np.array([families is None or it.family in families for it in items])
    items = [it for it, k in zip(items, keep) if k]
    metas = [_meta(p) for p in files]
    tmp = run_dir / ".store.zarr.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    store = RunStore(tmp)
    names = sorted(aggregate(items, np.ones(len(items)), np.zeros(len(items))))
    identity = {"kind": "public", "corpus": model, "budget": "public", "seed": 0, "dose": "none"}
    store.init_layout(items, names, {"run_id": model, "identity": identity})
    for p, m in zip(files, metas):
        with np.load(p) as z:
            lpc, lpd = z["lp_correct"][keep], z["lp_distractor"][keep]
        store.append(m["step"], float("nan"), float("nan"), items, lpc, lpd, aggregate(items, lpc, lpd))
    store.mark_complete(train_seconds=0.0)
    write_json_atomic(run_dir / "config.json", {"kind": "public", "model": model, "battery": str(battery),
                                                "families": families, "source": metas[0]["source"]})
    write_json_atomic(run_dir / "run.json", {
        "run_id": model, "identity": identity, "n_params": metas[-1]["n_params"],
        "revisions": [{k: m[k] for k in ("revision", "step", "commit")} for m in metas],
        "store": {"path": "store.zarr", "group": ""}})
    shutil.rmtree(run_dir / "store.zarr", ignore_errors=True)
    os.replace(tmp, run_dir / "store.zarr")
    write_summary(run_dir)
    return run_dir
