"""ungrok's own edits, kept under their own names: ``kill-contested:p`` and ``rescue-contest:d``.

They are sound edits of the built-in world but not the paper's (``docs/interventions.md``):

- ``kill-contested:p`` flips *contested rule wins* (the same key was followed earlier in the story
  by the other class's answer and the rule won) to the copied answer at rate p, walking each story
  left to right (later eligibility depends on earlier flips), in every class of every dosed family.
  Token count and positions preserved exactly; the manifest records eligible and flipped events.
- ``rescue-contest:d`` injects rule-beats-copy contests (the structure of the conflict probe) at
  d x the contested rule events per token of the built-in ``stories`` corpus (of the run's size and
  seed); injected rows are mixed into the stream at seeded positions (the stream grows); injected
  events are counted after tokenization and must equal the target; the disjointness gate runs
  before the stream is written.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from runner.config import CorpusConfig, RunConfig
from runner.data.corpora import build_corpus, load_corpus
from runner.data.support import corpus_support, pooled, token_ids
from runner.scoring import battery_for
from runner.world.rules import RULES

from .base import Dose
from .gate import check_disjoint
from .registry import FLIPS, INJECTS, InterventionError

REFERENCE_CORPUS = "stories"


class KillContested(Dose):
    """ungrok's variant of kill: flip contested rule wins to the copied answer in place at rate p
    (0 < p <= 1), sequentially, both classes."""

    name = "kill-contested"
    edit_id = "contested-1"

    def check_level(self, level: float) -> None:
        if not 0.0 < level <= 1.0:
            raise ValueError(f"kill rate {level} must be in (0, 1]")

    def edit(self, cfg: RunConfig, level: float, base, tok) -> tuple[np.ndarray, dict]:
        rows, per_family = base.rows, {}
        for f in cfg.dose_families:
            res = FLIPS.get(f)(rows, RULES.get(f), tok, level, cfg.intervention.seed)
            rows = res.rows
            per_family[f] = {"eligible": res.eligible, "flipped": res.flipped, "n_flipped": res.n_flipped}
        changed = int((rows != base.rows).sum())
        n_flipped = sum(v["n_flipped"] for v in per_family.values())
        if rows.shape != base.rows.shape or changed != n_flipped or \
                int((rows != base.pad_id).sum()) != base.n_tokens:
            raise RuntimeError(f"kill changed {changed} tokens for {n_flipped} flips or moved tokens; this is a bug")
        if n_flipped == 0:
            raise InterventionError(f"dose {cfg.dose}: no rule-winning event found in {base.path} for "
                                    f"{list(cfg.dose_families)}; nothing to kill (is it a template corpus?)")
        return rows, {"rate": level, "per_family": per_family, "tokens_changed": changed}


class RescueContest(Dose):
    """ungrok's contest injection: rule-beats-copy contests at d x stories' contested density (d > 0)."""

    name = "rescue-contest"
    edit_id = "contested-1"

    def check_level(self, level: float) -> None:
        if not level > 0.0:
            raise ValueError(f"rescue dose {level} must be > 0")

    @staticmethod
    def reference_density(cfg: RunConfig, families, corpora_dir: Path) -> dict[str, dict]:
        """Rule events per token of the built-in ``stories`` corpus, per family."""
        ref_cfg = CorpusConfig(name=REFERENCE_CORPUS, seed=cfg.corpus.seed, n_stories=cfg.corpus.n_stories,
                               story_tokens=cfg.corpus.story_tokens)
        ref_path = build_corpus(ref_cfg, corpora_dir)
        counts = corpus_support(ref_path, families)
        n_tokens = load_corpus(ref_path).n_tokens
        out = {}
        for f in families:
            p = pooled(counts[f], "contested")
            out[f] = {"corpus": str(ref_path), "mode": "contested", "rule_events": p["rule"], "n_tokens": n_tokens,
                      "per_token": p["rule"] / n_tokens}
        return out

    def edit(self, cfg: RunConfig, level: float, base, tok) -> tuple[np.ndarray, dict]:

        fams = list(cfg.dose_families)
        for f in fams:
            fam = RULES.get(f)
            missing = [w for cls in fam.cue_classes for w in fam.rescue_cues.get(cls, ()) if not token_ids(tok, w)]
            if missing:
                raise InterventionError(f"dose {cfg.dose}: the corpus tokenizer lacks the rescue words of {f} "
                                        f"(e.g. {missing[0]!r}); rescue needs the built-in world's vocabulary")
        ref = self.reference_density(cfg, fams, base.path.parent)
        items = battery_for(cfg)
        injected, per_family = [], {}
        for f in fams:
            target = int(round(level * ref[f]["per_token"] * base.n_tokens))
            if target == 0:  # a dose so small it injects nothing would be an undosed run labelled "rescued"
                raise InterventionError(f"dose {cfg.dose}: {level:g} x the reference density "
                                        f"({ref[f]['per_token']:.3g} rule events/token) x {base.n_tokens:,} tokens "
                                        f"rounds to 0 events for {f}; raise the dose (at least "
                                        f"{0.5 / max(ref[f]['per_token'] * base.n_tokens, 1e-12):.2g})")
            res = INJECTS.get(f)(RULES.get(f), tok, target, base.rows.shape[1], cfg.intervention.seed)
            if res.events != target:
                raise RuntimeError(f"{f}: injected {res.events} rule events, asked for {target}; this is a bug")
            check_disjoint(items, res.cues, partial(res.texts, tok), res.rows, tok)  # GateError names the string
            injected.append(res.rows)
            per_family[f] = {"target_events": target, "injected_events": res.events, "injected_rows": len(res.rows),
                             "injected_tokens": int((res.rows != base.pad_id).sum()), "reference": ref[f]}
        allrows = np.concatenate([base.rows, *injected])
        order = np.random.default_rng([cfg.intervention.seed, 7]).permutation(len(allrows))
        return allrows[order], {"dose": level, "per_family": per_family, "base_rows": int(len(base.rows)),
                                "base_tokens": base.n_tokens}


# The instances the dose registry discovers (entry points ``ungrok.doses`` in pyproject.toml).
KILL_CONTESTED = KillContested()
RESCUE_CONTEST = RescueContest()
