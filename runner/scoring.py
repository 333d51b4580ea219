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
from dataclasses import dataclass, field
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
    plans: dict = field(default_factory=dict, repr=False)  # forward plans by (batch size, width), :func:`_packed`

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


@dataclass
class _Packed:
    """``enc``'s forward work, planned once per battery (the prefix work of scoring).

    Logits at position t depend only on tokens 0..t (a causal model), so a sequence needs only
    its tokens up to its last continuation position as input, and sequences whose inputs are equal
    (correct and distractor of a one-token answer: both are the prefix) share one row. Each input
    runs right-padded to its own width, its length rounded up to a multiple of :data:`WIDTH_STEP`
    (at most the model's context): CPU kernels round differently at other widths (measured: a
    softmax over 16 keys vs 8), so a sequence's figures must not depend on which other items
    share its battery (a battery rescored after training equals training bit for bit). Rows of a
    width are batched ``batch_size`` at a time (the row count does not change a row's figures).
    ``targets[b]``: (row in batch b, position, target token, sequence, k-th continuation token)."""

    batches: list[Tensor]
    targets: list[Tensor]
    n_seq: int
    max_k: int


WIDTH_STEP = 8


def _packed(enc: EncodedBattery, batch_size: int, max_width: int) -> _Packed:
    """The plan of :class:`_Packed` for ``enc`` (cached on ``enc`` per batch size and width)."""
    if (batch_size, max_width) in enc.plans:
        return enc.plans[(batch_size, max_width)]
    toks = enc.tokens
    pos = [m.nonzero()[:, 0].tolist() for m in enc.cont_mask[:, :-1] > 0]
    keys = [tuple(toks[i, : (p[-1] + 1 if p else 1)].tolist()) for i, p in enumerate(pos)]
    uniq = list(dict.fromkeys(keys))
    width = {u: min(-(-len(u) // WIDTH_STEP) * WIDTH_STEP, max(max_width, len(u))) for u in uniq}
    order = sorted(uniq, key=lambda u: (width[u], len(u)))
    where, batches = {}, []
    for w in dict.fromkeys(width[u] for u in order):
        group = [u for u in order if width[u] == w]
        for lo in range(0, len(group), batch_size):
            b = torch.zeros((len(group[lo: lo + batch_size]), w), dtype=toks.dtype)
            for r, u in enumerate(group[lo: lo + batch_size]):
                b[r, : len(u)] = torch.tensor(u, dtype=toks.dtype)
                where[u] = (len(batches), r)
            batches.append(b)
    rows: list[list[list[int]]] = [[] for _ in batches]
    for i, u in enumerate(keys):
        bi, r = where[u]
        rows[bi] += [[r, t, int(toks[i, t + 1]), i, k] for k, t in enumerate(pos[i])]
    plan = _Packed(batches, [torch.tensor(r, dtype=torch.long).reshape(-1, 5) for r in rows], toks.shape[0],
                   max([len(p) for p in pos] + [1]))
    enc.plans[(batch_size, max_width)] = plan
    return plan


def _has_hooks(model) -> bool:
    """Any hook attached to ``model``'s hook points (interventions' patches and ablations); for a
    model without hook points (a transformers model), any forward hook on any module. (The
    TransformerBridge wires pre-hooks of its own into its norms; those are not hook points.)"""
    points = getattr(model, "hook_dict", None)
    mods = points.values() if isinstance(points, dict) else model.modules()
    return any(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None) for m in mods)


def _logits(model, toks: Tensor) -> Float[Tensor, "b pos vocab"]:
    out_ = model(toks)
    return getattr(out_, "logits", out_)  # HF models return an output object


@torch.no_grad()
def continuation_logprobs(model, enc: EncodedBattery, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(log p(correct), log p(distractor)) per item, each summed over continuation tokens.

    The log-softmax is taken only at the continuation positions (gathered first), in float32.
    A model with no hooks attached runs the packed plan of :func:`_packed` (each distinct input
    once, at a width set by its own length): about a third of the laid-out work on the built-in
    batteries. The figures equal the laid-out forward's to float32 rounding (a different width
    rounds differently, ~2e-6 at most measured; bit for bit on the default run); a battery's
    figures do not depend on its other items. With hooks attached
    (a patch may address the rows and positions of ``enc.tokens``) the battery runs as laid out,
    ``batch_size`` sequences per forward."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        if _has_hooks(model):
            return _laid_out(model, enc, batch_size, dev)
        n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None) or enc.tokens.shape[1]
        plan = _packed(enc, batch_size, int(n_ctx))
        vals = torch.zeros((plan.n_seq, plan.max_k), dtype=torch.float32)
        for toks, tg in zip(plan.batches, plan.targets):
            if not len(tg):
                continue
            logits = _logits(model, toks.to(dev))
            sel = logits[tg[:, 0].to(dev), tg[:, 1].to(dev)].float()
            lp = torch.log_softmax(sel, dim=-1).gather(-1, tg[:, 2:3].to(dev))[:, 0].cpu()
            vals[tg[:, 3], tg[:, 4]] = lp
        total = vals[:, 0].clone()
        for k in range(1, plan.max_k):  # in token order, whatever the battery's longest continuation
            total += vals[:, k]
        both = total.numpy().astype(np.float64)
    finally:
        model.train(was_training)
    return both[: enc.n], both[enc.n:]


def _laid_out(model, enc: EncodedBattery, batch_size: int, dev) -> tuple[np.ndarray, np.ndarray]:
    """:func:`continuation_logprobs` over ``enc.tokens`` as laid out (rows, positions, padding)."""
    out = []
    for i in range(0, enc.tokens.shape[0], batch_size):
        toks = enc.tokens[i: i + batch_size].to(dev)
        mask = enc.cont_mask[i: i + batch_size, :-1] > 0
        logits = _logits(model, toks)[:, :-1]
        r, t = mask.nonzero(as_tuple=True)
        lp = torch.log_softmax(logits[r.to(dev), t.to(dev)].float(), dim=-1)
        tgt = torch.zeros(mask.shape, dtype=torch.float32)
        tgt[r, t] = lp.gather(-1, toks[r.to(dev), t.to(dev) + 1, None])[:, 0].cpu()
        out.append(tgt.sum(-1))
    both = torch.cat(out).numpy().astype(np.float64)
    return both[: enc.n], both[enc.n:]


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
