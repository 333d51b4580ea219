"""Kill and rescue for induction-keyed rule families (both built-in rules).

A *rule-winning event* is a contested template event (see :func:`runner.support.scan_contested`):
the same key was followed earlier in the story by the other class's answer, so the competitor
(copy that answer) is live, and the stream shows the rule's answer. For ``pronoun_gender`` this
is exactly "the first rule pronoun in the 16-token window after a name whose verb was earlier
followed by the other pronoun".

- **flip** (kill): walk each story left to right; at each rule-winning event draw u ~ U(0, 1)
  from a generator seeded by (seed, family); if u < rate, the answer token becomes the
  competitor's (the copied answer). Later events see the edited story. Rate 1 leaves no
  rule-winning event at all; token count and positions never change.
- **inject** (rescue): rows of ``<bos>`` + sentences in the family's ``rescue_template`` with
  its ``rescue_cues`` (words no corpus and no probe uses), all sentences of a row sharing one key
  and alternating cue class, so every sentence after the first is a rule-winning event. The
  rows are made as text and tokenized; the events are then counted by the support counter and
  must equal the number asked for.
"""

from __future__ import annotations

import random
import zlib

import numpy as np

from runner.data.support import (
    contested_counts,
    cue_positions_by_row,
    scan_contested,
    template_ids,
)
from runner.world import vocab as V
from runner.world.rules import InductionRule

from .registry import FLIPS, INJECTS, FlipResult, InjectResult


def flip_induction(rows: np.ndarray, family: InductionRule, tokenizer, rate: float, seed: int) -> FlipResult:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"kill rate {rate} must be in [0, 1]")
    t = template_ids(family, tokenizer)
    rng = np.random.default_rng([seed, zlib.crc32(family.name.encode())])
    eligible = {c: 0 for c in family.cue_classes}
    flipped = {c: 0 for c in family.cue_classes}

    def edit(cls: str) -> bool:
        eligible[cls] += 1
        hit = bool(rng.random() < rate)
        flipped[cls] += hit
        return hit

    out = rows.copy()
    positions = cue_positions_by_row(rows, t)
    for i, pos in enumerate(positions):
        if not pos:
            continue
        row = out[i].tolist()
        for _ in scan_contested(row, t, pos, edit):
            pass
        out[i] = row
    return FlipResult(out, eligible, flipped)


def inject_induction(family: InductionRule, tokenizer, n_events: int, row_tokens: int, seed: int,
                     chunk: int = 20_000) -> InjectResult:
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    if not family.rescue_template or not family.rescue_cues:
        raise ValueError(f"{family.name} has no rescue_template/rescue_cues; it cannot be rescued by injection")
    per_row = (row_tokens - 1) // len(family.rescue_template) - 1  # events a full row carries
    if per_row < 1:
        raise ValueError(f"rows of {row_tokens} tokens are too short for two rescue sentences")
    rng = random.Random(f"ungrok/rescue/{family.name}/{seed}")
    classes = sorted(family.cue_classes)
    sizes = [per_row] * (n_events // per_row) + ([n_events % per_row] if n_events % per_row else [])
    pad = tokenizer.token_to_id(V.PAD)
    rows = np.full((len(sizes), row_tokens), pad, dtype=np.int32)
    counted = 0
    for lo in range(0, len(sizes), chunk):  # bounded memory: text, encodings and counts per chunk
        texts = []
        for n in sizes[lo : lo + chunk]:
            key = rng.choice(family.keys)
            cls_i = rng.randrange(len(classes))
            words = [V.BOS]
            for _ in range(n + 1):
                cls = classes[cls_i % len(classes)]
                sub = {"{cue}": rng.choice(family.rescue_cues[cls]), "{key}": key,
                       "{answer}": family.rule_answer[cls], "{adj}": rng.choice(V.ADJECTIVES)}
                words += [sub.get(w, w) for w in family.rescue_template]
                cls_i += 1
            texts.append(" ".join(words))
        for i, enc in enumerate(tokenizer.encode_batch(texts), start=lo):
            rows[i, : len(enc.ids)] = enc.ids
        counted += sum(c.rule for c in contested_counts(rows[lo : lo + chunk], family, tokenizer).values())
    cues = tuple(c for cls in classes for c in family.rescue_cues[cls])
    return InjectResult(rows, counted, cues)


for _name in ("pronoun_gender", "pronoun_gender_adjacent", "number_agreement"):
    FLIPS.register(_name, flip_induction)
    INJECTS.register(_name, inject_induction)
