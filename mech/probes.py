"""Probe items as hook-ready tensors: tokens, the prediction position, and where the cue and the
competitor's evidence sit.

For an induction-keyed family (``runner.rules.InductionRule``) a probe prefix is
``<earlier sentence with the same key and an answer> [fillers] <target sentence cut before its
answer>``. Three token positions matter to the mechanism:

- ``pred_pos``: the last prefix token, whose logits predict the answer;
- ``cue_pos``: the cue of the target sentence (the name whose class fixes the rule's answer);
- ``evidence_pos``: the competitor's evidence, the answer word of the earlier sentence that
  shares the key (the pronoun the in-context copy would repeat).

A *matched pair* for a conflict item is the same prefix with only the evidence word switched to
the rule's answer (the earlier pronoun now agrees): the two sequences have the same tokens
everywhere else, so patching between them isolates what the competitor's evidence does.
Rule-versus-prior families and any other battery: see :mod:`mech.positions` (cue from the
family's lexicon or the template slot, evidence = the frame word before the answer); positions
that cannot be located are -1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from runner.config import RunConfig
from runner.scoring import battery_for, stored_bos
from runner.store import RunDir
from runner.world import vocab as V
from runner.world.batteries import ProbeItem
from runner.world.rules import RULES, InductionRule

from .positions import decision_tokens, locate_all


@dataclass
class RunContext:
    """What every mech routine needs from a run folder, loaded once."""

    run_dir: Path
    cfg: RunConfig
    tokenizer: object  # tokenizers.Tokenizer
    bos_id: int | None
    pad_id: int
    items: list[ProbeItem]

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(it.family for it in self.items))


def run_context(run_dir: str | Path, items: list[ProbeItem] | None = None) -> RunContext:
    """Config, tokenizer and probe battery of a run (``runner.train.battery_for`` by default)."""
    from tokenizers import Tokenizer


    run_dir = Path(run_dir)
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    json.loads((run_dir / "run.json").read_text())  # a run folder: fail early otherwise
    tok = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    pad = tok.token_to_id(V.PAD)
    try:  # the start token training scored with (the store records it; a BPE corpus's is its EOT)
        bos = stored_bos(RunDir(run_dir).training_store_attrs(), tok)
    except FileNotFoundError:
        bos = tok.token_to_id(V.BOS)
    return RunContext(run_dir, cfg, tok, bos, 0 if pad is None else pad,
                      battery_for(cfg) if items is None else list(items))


@dataclass
class ProbeTensors:
    """One family's items, tokenised as ``<bos> prefix`` and right-padded."""

    family: str
    items: list[ProbeItem]
    tokens: Int[Tensor, "item pos"]
    pred_pos: Int[Tensor, " item"]
    cue_pos: Int[Tensor, " item"]
    evidence_pos: Int[Tensor, " item"]
    correct_id: Int[Tensor, " item"]      # the correct continuation's token at the decision site
    distractor_id: Int[Tensor, " item"]   # the distractor's token there
    n_shared: Int[Tensor, " item"] | None = None  # continuation tokens both share, appended to the prefix

    @property
    def n(self) -> int:
        return len(self.items)

    def subset(self, idx: list[int] | Tensor) -> "ProbeTensors":
        idx = torch.as_tensor(idx, dtype=torch.long)
        T = int(self.pred_pos[idx].max()) + 1 if len(idx) else 1
        return ProbeTensors(self.family, [self.items[int(i)] for i in idx], self.tokens[idx, :T],
                            self.pred_pos[idx], self.cue_pos[idx], self.evidence_pos[idx],
                            self.correct_id[idx], self.distractor_id[idx],
                            None if self.n_shared is None else self.n_shared[idx])

    def where(self, condition: str | None = None, split: str | None = None) -> "ProbeTensors":
        return self.subset([i for i, it in enumerate(self.items)
                            if (condition is None or it.condition == condition)
                            and (split is None or it.split == split)])


def _ids_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(enc.ids), list(enc.offsets)


def _word_spans(text: str) -> list[tuple[int, int]]:
    spans, i = [], 0
    for w in text.split(" "):
        if w:
            spans.append((i, i + len(w)))
        i += len(w) + 1
    return spans


def locate_words(item: ProbeItem) -> tuple[int, int]:
    """Word indices (in ``prefix.split()``) of the target cue and of the competitor's evidence;
    -1 where the family's layout is unknown."""
    words = item.prefix.split()
    fam = RULES.get(item.family) if item.family in RULES else None
    if not isinstance(fam, InductionRule):
        return -1, -1
    template = fam.neutral_template if item.condition == "neutral" else fam.template
    cut = list(fam._fill(template, "{cue}", "{key}", "{answer}", "{adj}"))
    if "{answer}" not in cut or "{cue}" not in cut:
        return -1, -1
    n_target = cut.index("{answer}")
    start = len(words) - n_target
    cue = start + cut.index("{cue}") if start >= 0 else -1
    answers = set(fam.answers)
    evidence = max((i for i, w in enumerate(words[:max(start, 0)]) if w in answers), default=-1)
    return cue, evidence


def _token_index(offsets: list[tuple[int, int]], char_start: int) -> int:
    for t, (a, b) in enumerate(offsets):
        if a <= char_start < b or a >= char_start:
            return t
    return -1


def encode_probes(items: list[ProbeItem], tokenizer, bos_id: int | None, n_ctx: int,
                  pad_id: int = 0) -> ProbeTensors:
    """Tokenise one family's items like ``runner.scoring.encode_battery`` (``<bos>`` + prefix,
    the last ``n_ctx - 1`` tokens kept so the answer still fits) and locate the positions.

    Continuations that share leading tokens get them appended to the prefix, so ``pred_pos`` is
    the decision site and ``correct_id`` / ``distractor_id`` the first tokens that differ
    (:func:`mech.positions.decision_tokens`); cue and evidence for any family come from
    :func:`mech.positions.locate_all`."""
    fams = {it.family for it in items}
    if len(fams) != 1:
        raise ValueError(f"encode_probes takes one family's items, got {sorted(fams)}")
    seqs, pred, cue, ev, cid, did, shared = [], [], [], [], [], [], []
    for it, (wc, we) in zip(items, locate_all(items, locate_words)):
        ids, offs = _ids_offsets(tokenizer, it.prefix)
        c_ids, _ = _ids_offsets(tokenizer, it.correct)
        d_ids, _ = _ids_offsets(tokenizer, it.distractor)
        if not c_ids or not d_ids:
            raise ValueError(f"item {it.item_id}: a continuation tokenises to nothing")
        common, c, d = decision_tokens(c_ids, d_ids)
        head = [bos_id] if bos_id is not None else []
        seq = head + ids + common
        drop = max(0, len(seq) - (n_ctx - 1))
        seq = seq[drop:]
        spans = _word_spans(it.prefix)
        pos = []
        for w in (wc, we):
            t = _token_index(offs, spans[w][0]) if 0 <= w < len(spans) else -1
            t = t + len(head) - drop if t >= 0 else -1
            pos.append(t if t >= 0 else -1)
        seqs.append(seq)
        pred.append(len(seq) - 1)
        cue.append(pos[0])
        ev.append(pos[1])
        cid.append(c)
        did.append(d)
        shared.append(len(common))
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    L = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return ProbeTensors(items[0].family, list(items), tokens, L(pred), L(cue), L(ev), L(cid), L(did), L(shared))


def switch_evidence(item: ProbeItem) -> ProbeItem | None:
    """The matched twin of a conflict item: the competitor's evidence word replaced by the rule's
    answer (so the earlier sentence agrees), everything else identical. None if it cannot be
    located."""
    _, ev = locate_words(item)
    if ev < 0:
        return None
    spans = _word_spans(item.prefix)
    a, b = spans[ev]
    new = item.correct.strip()
    prefix = item.prefix[:a] + new + item.prefix[b:]
    if prefix == item.prefix:
        return None
    return item.model_copy(update={"prefix": prefix, "condition": "switched",
                                   "item_id": item.item_id + "+switched"})


def matched_pairs(items: list[ProbeItem], tokenizer, bos_id: int | None, n_ctx: int, pad_id: int = 0,
                  split: str | None = "heldout") -> tuple[ProbeTensors, ProbeTensors]:
    """(conflict, switched) tensors of equal shape: conflict items of one family whose twin
    tokenises to the same length (the evidence swap is one token for one token)."""
    conflict = [it for it in items if it.condition == "conflict" and (split is None or it.split == split)]
    a, b = [], []
    for it in conflict:
        tw = switch_evidence(it)
        if tw is None:
            continue
        if len(_ids_offsets(tokenizer, tw.prefix)[0]) != len(_ids_offsets(tokenizer, it.prefix)[0]):
            continue
        a.append(it)
        b.append(tw)
    if not a:
        raise ValueError("no conflict item has a locatable competitor's evidence to switch")
    pa = encode_probes(a, tokenizer, bos_id, n_ctx, pad_id)
    pb = encode_probes(b, tokenizer, bos_id, n_ctx, pad_id)
    T = max(pa.tokens.shape[1], pb.tokens.shape[1])
    for p in (pa, pb):
        if p.tokens.shape[1] < T:
            p.tokens = torch.cat([p.tokens, torch.full((p.n, T - p.tokens.shape[1]), pad_id)], 1)
    return pa, pb
