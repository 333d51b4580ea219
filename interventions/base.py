"""What every dose shares: where its intervened stream lives, what names it, how it is built.

An intervened stream is a corpus folder beside its base corpus, built once per (base corpus,
dose, intervention settings) and shared by every training seed, with a manifest that records what
was done and the support the model will actually see (counted on the intervened stream). A
built-in corpus's stream is a table of rows (``write_corpus``); a real-text (``built:``) corpus's
is a flat token stream in the real-text format (:mod:`interventions.textstream`), written by the
doses that have a real-text edit (``edit_stream``: the paper's kill and rescue) and refused,
naming why, by the others.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from runner.config import RunConfig
from runner.data.corpora import TEXT_FORMAT, load_corpus, write_corpus
from runner.data.matching import TokenStream, separator_ids
from runner.data.support import count_support

from .registry import InterventionError
from .textstream import stream_support, write_text_stream

# Version of the paper's edits; part of what names their streams (a stream of another version is
# never reused).
EDIT_VERSION = "paper-1"


def stream_config(cfg: RunConfig, base_path: Path, edit: str) -> dict:
    """What names an intervened stream: base corpus (config and sha256), dose, the intervention
    settings, and which edit (``edit``: the dose's implementation and version)."""
    m = json.loads((base_path / "manifest.json").read_text())
    base_config = m["config"] if "config" in m else m["spec"]  # a real-text corpus: the spec it was built from
    iv = cfg.intervention.model_dump(mode="json", exclude={"start_step", "end_step"})
    if cfg.intervention.whole_dose:  # the window's length sets the stream's density
        iv["window"] = [cfg.intervention.start_step, cfg.intervention.end_step or cfg.train.steps, cfg.train.steps]
    iv["families"] = list(cfg.dose_families)
    return {"base": base_config, "base_sha256": m["sha256"], "dose": cfg.dose, "edit": edit, "intervention": iv}


def stream_dest(cfg: RunConfig, base: Path, config: dict) -> Path:
    h = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k not in ("base", "base_sha256")},
                                  sort_keys=True).encode()).hexdigest()[:8]
    return base.parent / f"{base.name}-{cfg.dose.replace(':', '').replace('=', '')}-{h}"


def existing(dest: Path, config: dict) -> Path | None:
    mf = dest / "manifest.json"
    if not mf.exists():
        return None
    if json.loads(mf.read_text())["config"] != config:
        raise InterventionError(f"{dest} holds a different intervened stream; remove it")
    return dest


def corpus_stream(base) -> tuple[TokenStream, np.ndarray]:
    """A built corpus as a :class:`TokenStream` and, per stream position, its index in the flat
    rows: a built-in corpus's rows are documents (padding dropped); a real-text corpus is one flat
    stream whose documents start at its end-of-text tokens."""
    rows = np.asarray(base.rows)
    seps = separator_ids(base.tokenizer)
    if base.stream is not None or base.pad_id < 0:
        flat = rows.reshape(-1)
        return TokenStream.from_flat(flat, seps), np.arange(len(flat))
    keep = rows != base.pad_id
    return TokenStream.from_rows(rows, base.pad_id, seps), np.flatnonzero(keep.ravel())


class Dose:
    """The shared build: reuse a stream whose manifest matches, else edit the base corpus's rows
    (``edit``, per intervention), count the support the model will see on the result, and write
    the stream atomically beside the base corpus with a manifest of what was done."""

    name = ""
    edit_id = EDIT_VERSION
    level_keys: tuple[str, ...] = ()
    # Why this dose cannot edit a real-text corpus ("" when it can: it has ``edit_stream``).
    text_refusal = ("edits the built-in world's rows only (it reads the world's story templates and writes "
                    "word-level rows); on real text use kill:<p> or kill:ratio=<r>, the paper's kill")

    def build(self, cfg: RunConfig, level: float, base_path: Path) -> Path:
        if cfg.intervention.whole_dose and (self.name != "rescue" or not cfg.intervention.window):
            raise InterventionError(f"dose {cfg.dose}: intervention.whole_dose puts a rescue's whole dose into its "
                                    "window: it needs dose rescue:<d> and a window (start_step and/or end_step)")
        config = stream_config(cfg, base_path, f"{self.name}/{self.edit_id}")
        dest = stream_dest(cfg, base_path, config)
        if existing(dest, config):
            return dest
        if self.text_refusal and json.loads((base_path / "manifest.json").read_text()).get("format") == TEXT_FORMAT:
            raise InterventionError(f"dose {cfg.dose}: {base_path.name} is a real-text (built:) corpus and "
                                    f"{self.name} {self.text_refusal}")  # refused before the stream is read
        base = load_corpus(base_path)
        if base.stream is not None:
            return self.build_text(cfg, level, base, dest, config)
        tok = base.tokenizer
        rows, gen = self.edit(cfg, level, base, tok)
        support = count_support(rows, tok, cfg.probes.families, pad_id=base.pad_id)
        gen = {"kind": self.name, "edit": self.edit_id, "base_corpus": str(base_path), **gen}
        return write_corpus(dest, rows, tok, config, gen, support=support)

    def edit(self, cfg: RunConfig, level: float, base, tok) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def build_text(self, cfg: RunConfig, level: float, base, dest: Path, config: dict) -> Path:
        """A real-text base: the edit of its flat stream (``edit_stream``), the support counted on
        the result, written in the real-text format (a dose with a ``text_refusal`` never gets here)."""
        edited, gen = self.edit_stream(cfg, level, base)
        tok = base.tokenizer
        support = stream_support(edited, tok, cfg.probes.families, int(base.manifest["row_tokens"]))
        gen = {"kind": self.name, "edit": self.edit_id, "base_corpus": str(base.path), **gen}
        return write_text_stream(dest, edited.ids, base, config, gen, support)

    def edit_stream(self, cfg: RunConfig, level: float, base) -> tuple[TokenStream, dict]:
        """The edited flat stream of a real-text corpus (its documents' starts unchanged) and the
        edit's record; only doses with an empty ``text_refusal`` have one."""
        raise NotImplementedError
