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
snapshot's commit; ``run:<dir>`` reads ungrok's own runs, ``<dir>/<run-id>/weights/`` (a runs
folder or a sweep's ``runs/``), revision ``step<N>`` being the weights saved after N steps. Every
source goes through one loader (:mod:`runner.train.rescore`: ``open_hf_checkpoint``,
``open_run_checkpoint``) and the scoring routine of training.

Start token: public checkpoints are scored **without** a BOS token by default (the paper's
convention; with one prepended, margins on a random GPT-NeoX differed by up to 4.15 nats and 363
of rvp4's 3,156 choices flipped); ``bos=True`` prepends the tokenizer's. An ungrok run is scored
with the start token it was trained with. Which one was used is recorded per revision, in
``run.json``/``config.json`` and in the store's attributes; a revision scored with another
setting is scored again, and a model's revisions must agree before they are assembled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner._io import atomic_path, file_sha256, write_json_atomic
from runner.scoring import aggregate, battery_info, check_unknown, continuation_logprobs
from runner.store import RunStore
from runner.train.rescore import RescoreError, Scorable, open_hf_checkpoint, open_run_checkpoint, weight_steps
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
    """Where checkpoints come from: ``local:<dir>``, ``hub[:<org>]`` (default org EleutherAI) or
    ``run:<dir>`` (ungrok runs ``<dir>/<run-id>``)."""

    spec: str

    def __post_init__(self) -> None:
        kind = self.spec.split(":", 1)[0]
        if kind not in ("local", "hub", "run") or (kind in ("local", "run") and not self.spec[len(kind) + 1:]):
            raise PublicError(f"source {self.spec!r}: use local:<dir> (a mirror <dir>/<model>/<revision>/), "
                              "hub[:<org>] or run:<dir> (ungrok runs <dir>/<run-id>/)")

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def root(self) -> Path:
        return Path(self.spec.split(":", 1)[1])

    def revisions(self, model: str) -> list[str]:
        """Every revision the source holds for ``model`` (``run:`` and ``local:`` only), in step order."""
        if self.kind == "run":
            return [f"step{s}" for s in weight_steps(self.root / model)]
        if self.kind == "local":
            found = [p.name for p in (self.root / model).glob("step*") if (p / "config.json").exists()]
            return sorted(found, key=revision_step)
        raise PublicError("revisions 'all': list what the hub holds yourself (step0,step1000,...), or use a "
                          "local: or run: source")

    def resolve(self, model: str, revision: str) -> tuple[Path, str]:
        """(folder, commit) of one checkpoint: a save_pretrained folder, or for ``run:`` the run folder."""
        if self.kind == "run":
            weights = self.root / model / "weights" / f"step_{revision_step(revision):07d}.safetensors"
            if not weights.exists():
                raise PublicError(f"{model} @ {revision}: no weights at {weights}; check the run id and that the run "
                                  "saved that step")
            return self.root / model, "sha256:" + file_sha256(weights)
        if self.kind == "local":
            folder = self.root / model / revision
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

    def open(self, folder: Path, revision: str, bos: bool) -> Scorable:
        """The checkpoint at ``folder`` (what :meth:`resolve` returned) through the one loader."""
        try:
            if self.kind == "run":
                return open_run_checkpoint(folder, revision_step(revision))
            return open_hf_checkpoint(folder, bos=bos)
        except RescoreError as e:
            raise PublicError(str(e)) from None


def _folder_hash(folder: Path) -> str:
    """sha256 over the folder's files (names and bytes), in name order."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            file_sha256(p, h)
    return h.hexdigest()


def load_checkpoint(folder: Path, bos: bool = False):
    """A Hugging Face folder as a TransformerBridge (eval mode) and its tokenizer; no network."""
    sc = open_hf_checkpoint(folder, bos=bos)
    return sc.model, sc.tokenizer


def scored_with(path: Path, source: str, bos: bool) -> bool:
    """Whether the revision file at ``path`` exists and was scored with the start-token setting
    asked for (files from before it was recorded were scored with the tokenizer's BOS; an ungrok
    run is always scored with its own)."""
    if not path.exists():
        return False
    return Source(source).kind == "run" or bool(_meta(path).get("bos", True)) == bos


def score_revision(model: str, revision: str, source: str, battery: str, out_dir: str,
                   batch_size: int = 64, bos: bool = False, max_unknown: float = 1.0) -> dict:
    """Score one (model, revision) and keep the result in ``<out>/<model>/revisions/<rev>.npz``
    (written atomically; an existing file scored with the same start-token setting is reused).
    ``bos``: prepend the tokenizer's start token (default off, the paper's convention; an ungrok run
    uses the one it was trained with). The Ray task body of ``ungrok public``."""
    dest = Path(out_dir) / model / "revisions" / f"{revision}.npz"
    if scored_with(dest, source, bos):
        return _meta(dest)
    src = Source(source)
    folder, commit = src.resolve(model, revision)
    items = read_battery(battery)
    sc = src.open(folder, revision, bos)
    enc = sc.encode(items)
    check_unknown(enc, max_unknown, f"battery {battery} on {model}")
    lpc, lpd = continuation_logprobs(sc.model, enc, batch_size=batch_size)
    n_params = int(sum(p.numel() for p in sc.model.parameters()))
    meta = {"model": model, "revision": revision, "step": revision_step(revision), "commit": commit,
            "folder": str(folder), "n_params": n_params, "source": source, "bos": enc.bos_id is not None,
            "bos_id": enc.bos_id, "tokens": enc.token_report()}
    with atomic_path(dest) as tmp:
        np.savez(tmp, lp_correct=lpc, lp_distractor=lpd, n_correct=enc.n_correct, n_distractor=enc.n_distractor,
                 meta=json.dumps(meta))
    return meta


def _meta(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def _revision_arrays(path: Path, keep: np.ndarray) -> tuple[Any, ...]:
    """(lp_correct, lp_distractor, n_correct, n_distractor) of the kept items; token counts are
    None in files scored before they were recorded."""
    with np.load(path) as z:
        lens = (z["n_correct"][keep], z["n_distractor"][keep]) if "n_correct" in z.files else (None, None)
        return z["lp_correct"][keep], z["lp_distractor"][keep], *lens


def _start_token(model: str, metas: list[dict]) -> dict:
    """The start-token setting every revision of ``model`` was scored with (they must agree)."""
    seen = {(bool(m.get("bos", True)), m.get("bos_id")) for m in metas}
    if len({b for b, _ in seen}) > 1:
        raise PublicError(f"{model}: revisions were scored with and without a start token; score them all with "
                          "one setting (rerun ungrok public with or without --bos)")
    bos, bos_id = next(iter(seen))
    return {"bos": bos, "bos_id": bos_id}


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
    start = _start_token(model, metas)
    tmp = run_dir / ".store.zarr.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    store = RunStore(tmp)
    _, _, nc, nd = _revision_arrays(files[0], keep)
    ones = np.ones(len(items))
    names = sorted(aggregate(items, ones, 0 * ones, *((ones, ones) if nc is not None else ())))
    identity = {"kind": "public", "corpus": model, "budget": "public", "seed": 0, "dose": "none"}
    attrs = {"run_id": model, "identity": identity, "battery": battery_info(battery), **start,
             "tokens": metas[-1].get("tokens")}
    store.init_layout(items, names, attrs, item_columns=None if nc is None else
                      {"n_tokens_correct": nc, "n_tokens_distractor": nd})
    for p, m in zip(files, metas):
        lpc, lpd, nc, nd = _revision_arrays(p, keep)
        store.append(m["step"], float("nan"), float("nan"), items, lpc, lpd, aggregate(items, lpc, lpd, nc, nd))
    store.mark_complete(train_seconds=0.0)
    write_json_atomic(run_dir / "config.json", {"kind": "public", "model": model, "battery": str(battery),
                                                "families": families, "source": metas[0]["source"], **start})
    write_json_atomic(run_dir / "run.json", {
        "run_id": model, "identity": identity, "n_params": metas[-1]["n_params"], **start,
        "revisions": [{k: m[k] for k in ("revision", "step", "commit")} for m in metas],
        "store": {"path": "store.zarr", "group": ""}})
    shutil.rmtree(run_dir / "store.zarr", ignore_errors=True)
    os.replace(tmp, run_dir / "store.zarr")
    write_summary(run_dir)
    return run_dir
