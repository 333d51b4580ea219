"""Forced-choice scoring of probe items and the contrast/prior margins.

For each item the model scores the full continuation: log p(continuation | prefix) summed over
the continuation's tokens, for ``correct`` and for ``distractor``. The prefix starts with
``<bos>`` only when the model was trained with one (:func:`training_bos`; the paper's convention,
and why public checkpoints are scored without it by default); which one was used is recorded in
the store's attributes (``bos``, ``bos_id``).

Figures per family and cell (``<condition>_<split>``, :func:`aggregate`):
- ``acc_<cell>``: argmax accuracy, the fraction of items where correct > distractor (primary).
- ``lnd_<cell>``: the secondary metric, the mean length-normalised log-prob difference
  log p(correct)/n_correct - log p(distractor)/n_distractor (n in tokens; nats per token).
- ``cm``, contrast margin = mean[log p(rule answer) - log p(competitor answer)] over heldout
  conflict items; > 0 while the rule wins, < 0 once the competitor has displaced it.
- ``pm``, prior pull = mean[log p(competitor answer) - log p(other answer)] over neutral items.

Words outside the tokenizer's vocabulary encode as its unknown token (the built-in world's
word-level tokenizer knows ~350 words): items holding one are counted (``unknown`` per item, and
``tokens`` in the attributes), and a battery where more than ``max_unknown`` of the items hold
one is refused (:func:`check_unknown`) unless that limit is raised.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from runner.store import RESERVED_GROUPS, RunStore
from runner.world import vocab as V
from runner.world.batteries import ProbeItem, read_battery
from runner.world.rules import RULES

if TYPE_CHECKING:
    from runner.config import RunConfig

GENERATED = "generated"  # the battery name of items generated from registered families


class UnknownTokensError(ValueError):
    """Too many of a battery's items hold words outside the tokenizer's vocabulary."""


@dataclass
class EncodedBattery:
    """Items tokenised once: 2N sequences (correct then distractor), right-padded."""

    items: list[ProbeItem]
    tokens: Int[Tensor, "seq pos"]
    cont_mask: Float[Tensor, "seq pos"]  # 1 where position t+1 is a continuation token
    n_tokens: np.ndarray | None = None  # (2N,) continuation lengths in tokens, correct then distractor
    unknown: np.ndarray | None = None  # (N,) the item holds the tokenizer's unknown token
    tied: np.ndarray | None = None  # (N,) correct and distractor encode to the same tokens
    bos_id: int | None = None

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def n_correct(self) -> np.ndarray:
        return np.asarray(self.n_tokens)[: self.n]

    @property
    def n_distractor(self) -> np.ndarray:
        return np.asarray(self.n_tokens)[self.n:]

    def token_report(self) -> dict:
        """How many items hold an unknown token, and how many of those cannot be told apart."""
        unknown = np.zeros(self.n, bool) if self.unknown is None else self.unknown
        tied = np.zeros(self.n, bool) if self.tied is None else self.tied
        return {"n_items": self.n, "n_unknown_items": int(unknown.sum()), "n_tied_items": int(tied.sum())}


def _ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` for a ``tokenizers.Tokenizer`` or a transformers tokenizer."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(enc, "ids", enc))


def unknown_id(tokenizer) -> int | None:
    """The id the tokenizer gives words outside its vocabulary (None for byte-level BPE and other
    tokenizers that have none)."""
    uid = getattr(tokenizer, "unk_token_id", None)  # transformers
    if uid is not None:
        return int(uid)
    name = getattr(getattr(tokenizer, "model", None), "unk_token", None)  # tokenizers.Tokenizer
    uid = tokenizer.token_to_id(name) if name else None
    return None if uid is None else int(uid)


def encode_battery(items: list[ProbeItem], tokenizer, bos_id: int | None, n_ctx: int,
                   pad_id: int = 0) -> EncodedBattery:
    """Tokenise prefix and continuations separately (so the continuation's tokens are exactly
    its own), prepend ``bos_id`` unless None, keep the last ``n_ctx`` tokens. Sequences are
    right-padded with ``pad_id`` (0 when the corpus has no padding token, ``pad_id`` < 0: a causal
    model's logits never see what follows, and the mask leaves it out)."""
    unk = unknown_id(tokenizer)
    pad_id = pad_id if pad_id >= 0 else 0
    seqs: list[list[int]] = []
    conts: list[list[int]] = []
    unknown = np.zeros(len(items), dtype=bool)
    for which in ("correct", "distractor"):
        for i, it in enumerate(items):
            ids = _ids(tokenizer, it.prefix)
            cont = _ids(tokenizer, getattr(it, which))
            if not cont:
                raise ValueError(f"item {it.item_id}: {which} tokenises to nothing")
            unknown[i] |= unk is not None and unk in ids + cont
            seqs.append(((([bos_id] if bos_id is not None else []) + ids + cont)[-n_ctx:]))
            conts.append(cont)
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.float32)
    for i, (s, c) in enumerate(zip(seqs, conts)):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, len(s) - len(c) - 1 : len(s) - 1] = 1.0  # logits at t predict token t+1
    n = len(items)
    tied = np.array([conts[i] == conts[n + i] for i in range(n)], dtype=bool)
    return EncodedBattery(items=items, tokens=tokens, cont_mask=mask, n_tokens=np.array([len(c) for c in conts]),
                          unknown=unknown, tied=tied, bos_id=bos_id)


def check_unknown(enc: EncodedBattery, max_unknown: float, what: str) -> dict:
    """The token report of ``enc``; UnknownTokensError when more than ``max_unknown`` of the items hold a
    word outside the vocabulary (the message says how many, and how to score them anyway)."""
    rep = enc.token_report()
    if rep["n_unknown_items"] > max_unknown * rep["n_items"]:
        raise UnknownTokensError(
            f"{what}: {rep['n_unknown_items']:,} of {rep['n_items']:,} items hold words outside the tokenizer's "
            f"vocabulary (encoded as its unknown token; in {rep['n_tied_items']:,} the two answers encode "
            f"identically, so their choice means nothing). Score a battery in the model's vocabulary (a "
            f"real-text BPE corpus knows English), or allow it: probes.max_unknown = 1 "
            f"(--max-unknown 1; now {max_unknown:g})")
    return rep


@torch.no_grad()
def continuation_logprobs(model, enc: EncodedBattery, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(log p(correct), log p(distractor)) per item, each summed over continuation tokens."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, enc.tokens.shape[0], batch_size):
        toks = enc.tokens[i : i + batch_size].to(dev)
        out_ = model(toks)
        logits: Float[Tensor, "b pos vocab"] = getattr(out_, "logits", out_)  # HF models return an output object
        lp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]
        tgt = lp.gather(-1, toks[:, 1:, None])[..., 0]
        out.append((tgt * enc.cont_mask[i : i + batch_size, :-1].to(dev)).sum(-1).cpu())
    model.train(was_training)
    both = torch.cat(out).numpy().astype(np.float64)
    return both[: enc.n], both[enc.n :]


def aggregate(items: list[ProbeItem], lp_correct: np.ndarray, lp_distractor: np.ndarray,
              n_correct: np.ndarray | None = None, n_distractor: np.ndarray | None = None) -> dict[str, float]:
    """Scalar figures for one checkpoint, keyed ``<family>/<metric>``.

    ``acc_<condition>_<split>`` for every cell present (and ``lnd_<condition>_<split>`` when the
    continuations' token counts are given), ``cm`` (conflict, heldout) and ``pm`` (neutral).
    Missing cells are simply absent.
    """
    diff = lp_correct - lp_distractor
    lnd = None if n_correct is None or n_distractor is None else lp_correct / n_correct - lp_distractor / n_distractor
    fam = np.array([it.family for it in items])
    cond = np.array([it.condition for it in items])
    split = np.array([it.split for it in items])
    out: dict[str, float] = {}
    for f in sorted(set(fam)):
        for c in sorted(set(cond[fam == f])):
            for s in sorted(set(split[(fam == f) & (cond == c)])):
                m = (fam == f) & (cond == c) & (split == s)
                out[f"{f}/acc_{c}_{s}"] = float((diff[m] > 0).mean())
                if lnd is not None:
                    out[f"{f}/lnd_{c}_{s}"] = float(lnd[m].mean())
        m = (fam == f) & (cond == "conflict") & (split == "heldout")
        if m.any():
            out[f"{f}/cm"] = float(diff[m].mean())
        m = (fam == f) & (cond == "neutral")
        if m.any():
            out[f"{f}/pm"] = float(diff[m].mean())
    return out


# ---- which battery, which start token ----------------------------------------------------------


def battery_for(cfg: RunConfig) -> list[ProbeItem]:
    """The run's items: its battery file's items of ``probes.families`` (every family it holds by
    default, registered or not), else items generated from the registered families."""
    if cfg.probes.battery:
        items = read_battery(cfg.probes.battery)
        held = set(it.family for it in items)
        missing = [f for f in cfg.probes.families if f not in held]
        if missing:
            raise ValueError(f"probes.families: {missing} not in the battery {cfg.probes.battery!r} (it holds "
                             f"{sorted(held)}); name families it holds, or leave families out to score them all")
        items = [it for it in items if it.family in cfg.probes.families]
        check_family_names(items, cfg.probes.battery)
        return items
    items: list[ProbeItem] = []
    for fam in cfg.probes.families:
        items += RULES.get(fam).battery(cfg.probes.n_per_cell, cfg.probes.n_neutral)
    return items


def check_family_names(items: list[ProbeItem], where: str) -> None:
    """A family's name is its store group: refuse names the store uses itself or cannot hold."""
    for f in dict.fromkeys(it.family for it in items):
        check_name(f, f"{where}: family name")


def check_name(name: str, what: str) -> str:
    """``name`` if it can name a store group (letters, digits, ``_ . -``; not a reserved group)."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in RESERVED_GROUPS or name.startswith("."):
        raise ValueError(f"{what}: {name!r} cannot name a store group; use letters, digits, _ . - "
                         f"(not {sorted(RESERVED_GROUPS)})")
    return name


def battery_name(path: str | Path) -> str:
    """The name a battery file's scores go under: its file name without ``.jsonl`` (``rvp4``)."""
    return check_name(Path(path).name.removesuffix(".jsonl"), f"battery {str(path)!r} (pass --name)")


def battery_info(path: str | Path | None, name: str | None = None) -> dict:
    """What the store records of a battery: name, path, sha256 of the file (``generated`` without one)."""
    if path is None:
        return {"name": name or GENERATED, "path": None, "sha256": None}
    data = Path(path).read_bytes()
    return {"name": check_name(name, "--name") if name else battery_name(path), "path": str(Path(path).resolve()),
            "sha256": hashlib.sha256(data).hexdigest()}


def training_bos(tokenizer, rows: np.ndarray | None = None, manifest: dict | None = None) -> int | None:
    """The start token a model was trained with, to prepend when scoring it (None: none).

    A corpus manifest's ``bos_id`` entry decides when present (None there: no start token);
    otherwise the tokenizer's ``<bos>`` if the corpus's rows hold it (the built-in corpora start
    every story with it, ``hf:`` corpora every document)."""
    if manifest is not None and "bos_id" in manifest:
        return None if manifest["bos_id"] is None else int(manifest["bos_id"])
    bos = tokenizer.token_to_id(V.BOS)
    if bos is None or rows is None:
        return bos
    return int(bos) if bool((np.asarray(rows[:1024]) == bos).any()) else None


def stored_bos(attrs: dict, tokenizer) -> int | None:
    """The start token a run's checkpoints were scored with during training: the store's
    ``bos_id`` attribute, or for stores written before it was recorded the tokenizer's ``<bos>``
    (what training prepended then)."""
    if "bos_id" in attrs:
        return None if attrs["bos_id"] is None else int(attrs["bos_id"])
    return tokenizer.token_to_id(V.BOS)


# ---- one scored row in a store -------------------------------------------------------------------


def score_attrs(enc: EncodedBattery, battery: dict) -> dict:
    """The scoring attributes of a store group: battery, start token, unknown-token counts, metrics."""
    return {"battery": battery, "bos": enc.bos_id is not None, "bos_id": enc.bos_id, "tokens": enc.token_report(),
            "metrics": {"primary": "acc (argmax forced choice)",
                        "secondary": "lnd = log p(correct)/n_correct - log p(distractor)/n_distractor, tokens"}}


def init_scores(store: RunStore, enc: EncodedBattery, attrs: dict) -> None:
    """Lay out ``store``'s group for ``enc``'s items (idempotent): metrics, per-item columns. A
    group laid out for another battery file (its sha256 differs) is refused: its rows would mix."""
    had = store.attr("battery") if store.attr("layout_ready") else None
    if had and had.get("sha256") != attrs["battery"]["sha256"]:
        raise ValueError(f"{store.path}/{store.group_path}: scored with battery {had.get('path')} "
                         f"(sha256 {str(had.get('sha256'))[:12]}), not {attrs['battery']['path']} (sha256 "
                         f"{str(attrs['battery']['sha256'])[:12]}); the file changed or another battery has its "
                         "name: restore it, or score under another name (--name)")
    ones, zeros = np.ones(enc.n), np.zeros(enc.n)
    names = sorted(aggregate(enc.items, ones, zeros, ones, ones))
    cols = {"n_tokens_correct": enc.n_correct, "n_tokens_distractor": enc.n_distractor,
            "unknown": np.asarray(enc.unknown)}
    store.init_layout(enc.items, names, attrs, item_columns=cols)


def append_scores(store: RunStore, model, enc: EncodedBattery, step: int, loss: float, lr: float) -> dict:
    """Score ``model`` on ``enc`` and append the row for ``step``; returns the aggregates. The one
    routine both training-time scoring and ``rescore`` use, so the two agree bit for bit."""
    lpc, lpd = continuation_logprobs(model, enc)
    metrics = aggregate(enc.items, lpc, lpd, enc.n_correct, enc.n_distractor)
    store.append(step, loss, lr, enc.items, lpc, lpd, metrics)
    return metrics
