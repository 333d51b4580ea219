"""The two doses a grid can name: ``kill:<rate>`` and ``rescue:<dose>``.

Each builds an *intervened stream*: a corpus folder beside its base corpus, built once per
(base corpus, dose, families, edit seed) and shared by every training seed, with a manifest
that records what was done and the support the model will actually see (counted on the
intervened stream by the same support counter as every corpus).

- ``kill:p`` flips rule-winning events to counter-evidence at rate p, in place (token count and
  positions preserved exactly; the manifest records eligible and flipped events per family and
  class, and the sha256 of the edited stream).
- ``rescue:d`` injects rule-winning events at d x a reference density: the rule events per token
  of the built-in ``stories`` corpus (contested mode of the support counter, i.e. events where the
  rule beat a live competitor, summed over cue classes), measured on a ``stories`` corpus of the
  same size and seed as the run's corpus. Injected rows are mixed into the stream at seeded
  positions; injected events are counted after tokenization and must equal the target; the
  disjointness gate runs before the stream is written.

Both are discovered by :data:`runner.doses.DOSES` through the entry points ``ungrok.doses``
(``pyproject.toml``), so a RunConfig's ``dose`` may name them whatever was imported before.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np

from runner.config import CorpusConfig, RunConfig
from runner.data.corpora import build_corpus, load_corpus, write_corpus
from runner.data.support import corpus_support, count_support, pooled, token_ids
from runner.scoring import battery_for
from runner.world.rules import RULES

from .gate import check_disjoint
from .registry import FLIPS, INJECTS, InterventionError

REFERENCE_CORPUS = "stories"


def _dest(cfg: RunConfig, base: Path) -> Path:
    key = {"dose": cfg.dose, "families": list(cfg.dose_families), "seed": cfg.intervention.seed}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return base.parent / f"{base.name}-{cfg.dose.replace(':', '')}-{h}"


def _existing(dest: Path, config: dict) -> Path | None:
    mf = dest / "manifest.json"
    if not mf.exists():
        return None
    if json.loads(mf.read_text())["config"] != config:
        raise InterventionError(f"{dest} holds a different intervened stream; remove it")
    return dest


def _config(cfg: RunConfig, base_path: Path) -> dict:
    """What names an intervened stream: its base corpus (config and sha256), dose, families, seed."""
    m = json.loads((base_path / "manifest.json").read_text())
    return {"base": m["config"], "base_sha256": m["sha256"], "dose": cfg.dose,
            "families": list(cfg.dose_families), "seed": cfg.intervention.seed}


class _Dose:
    """The shared build: reuse a stream whose manifest matches, else edit the base corpus's rows
    (``edit``, per intervention), count the support the model will see on the result, and write
    the stream atomically beside the base corpus with a manifest of what was done."""

    name = ""

    def build(self, cfg: RunConfig, level: float, base_path: Path) -> Path:
        config, dest = _config(cfg, base_path), _dest(cfg, base_path)
        if _existing(dest, config):
            return dest
        base = load_corpus(base_path)
        tok = base.tokenizer
        rows, gen = self.edit(cfg, level, base, tok)
        support = count_support(rows, tok, cfg.probes.families, pad_id=base.pad_id)
        gen = {"kind": self.name, "base_corpus": str(base_path), **gen}
        return write_corpus(dest, rows, tok, config, gen, support=support)

    def edit(self, cfg: RunConfig, level: float, base, tok) -> tuple[np.ndarray, dict]:
        raise NotImplementedError


class Kill(_Dose):
    """Flip rule-winning events to counter-evidence in place at rate p (0 < p <= 1)."""

    name = "kill"

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


class Rescue(_Dose):
    """Inject rule-winning events at d x the reference density (d > 0)."""

    name = "rescue"

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
KILL = Kill()
RESCUE = Rescue()
