"""Forced-choice scoring of probe items and the contrast/prior margins.

For each item the model scores the full continuation: log p(continuation | <bos> prefix) summed
over the continuation's tokens, for ``correct`` and for ``distractor``. Accuracy is the fraction
of items where correct > distractor (argmax forced choice).

Margins (per family, heldout split):
- CM, contrast margin = mean[log p(rule answer) - log p(competitor answer)] over conflict items;
  > 0 while the rule wins, < 0 once the competitor has displaced it.
- PM, prior pull = mean[log p(competitor answer) - log p(other answer)] over neutral items (no cue):
  how hard the competitor pulls when nothing argues for the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from runner.world.batteries import ProbeItem, read_battery
from runner.world.rules import RULES

if TYPE_CHECKING:
    from runner.config import RunConfig


@dataclass
class EncodedBattery:
    """Items tokenised once: 2N sequences (correct then distractor), right-padded."""

    items: list[ProbeItem]
    tokens: Int[Tensor, "seq pos"]
    cont_mask: Float[Tensor, "seq pos"]  # 1 where position t+1 is a continuation token

    @property
    def n(self) -> int:
        return len(self.items)


def _ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` for a ``tokenizers.Tokenizer`` or a transformers tokenizer."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(enc, "ids", enc))


def encode_battery(items: list[ProbeItem], tokenizer, bos_id: int | None, n_ctx: int,
                   pad_id: int = 0) -> EncodedBattery:
    """Tokenise prefix and continuations separately (so the continuation's tokens are exactly
    its own), prepend ``<bos>``, keep the last ``n_ctx`` tokens."""
    seqs: list[list[int]] = []
    conts: list[int] = []
    for which in ("correct", "distractor"):
        for it in items:
            pre = ([bos_id] if bos_id is not None else []) + _ids(tokenizer, it.prefix)
            cont = _ids(tokenizer, getattr(it, which))
            if not cont:
                raise ValueError(f"item {it.item_id}: {which} tokenises to nothing")
            seq = (pre + cont)[-n_ctx:]
            seqs.append(seq)
            conts.append(len(cont))
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.float32)
    for i, (s, c) in enumerate(zip(seqs, conts)):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, len(s) - c - 1 : len(s) - 1] = 1.0  # logits at t predict token t+1
    return EncodedBattery(items=items, tokens=tokens, cont_mask=mask)


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


def aggregate(items: list[ProbeItem], lp_correct: np.ndarray, lp_distractor: np.ndarray) -> dict[str, float]:
    """Scalar figures for one checkpoint, keyed ``<family>/<metric>``.

    ``acc_<condition>_<split>`` for every cell present, ``cm`` (conflict, heldout) and ``pm``
    (neutral). Missing cells are simply absent.
    """
    diff = lp_correct - lp_distractor
    fam = np.array([it.family for it in items])
    cond = np.array([it.condition for it in items])
    split = np.array([it.split for it in items])
    out: dict[str, float] = {}
    for f in sorted(set(fam)):
        for c in sorted(set(cond[fam == f])):
            for s in sorted(set(split[(fam == f) & (cond == c)])):
                m = (fam == f) & (cond == c) & (split == s)
                out[f"{f}/acc_{c}_{s}"] = float((diff[m] > 0).mean())
        m = (fam == f) & (cond == "conflict") & (split == "heldout")
        if m.any():
            out[f"{f}/cm"] = float(diff[m].mean())
        m = (fam == f) & (cond == "neutral")
        if m.any():
            out[f"{f}/pm"] = float(diff[m].mean())
    return out


def battery_for(cfg: RunConfig) -> list[ProbeItem]:
    if cfg.probes.battery:
        items = [it for it in read_battery(cfg.probes.battery) if it.family in cfg.probes.families]
        if not items:
            raise ValueError(f"probes.battery {cfg.probes.battery!r} holds no items for families {cfg.probes.families}")
        return items
    items: list[ProbeItem] = []
    for fam in cfg.probes.families:
        items += RULES.get(fam).battery(cfg.probes.n_per_cell, cfg.probes.n_neutral)
    return items
