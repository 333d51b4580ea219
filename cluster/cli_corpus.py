"""``ungrok corpus build``: the built-in world's corpora (``--preset``) or real text (``--source``),
and how ``ungrok train --corpus <name>`` finds a built real-text corpus. Thin: parse, call
``runner.data.corpora`` / ``runner.data.textcorpus``, turn their errors into one line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from cluster.cli_base import UserError, _validation_message, console, corpus_app


def corpus_config(preset: str, seed: int, n_stories: Optional[int], support: Optional[float], text_column: str):
    """A :class:`~runner.config.CorpusConfig` from the command line, or a one-line error."""
    from runner.config import CorpusConfig

    kw = {"name": preset, "seed": seed, "support": support, "text_column": text_column}
    if n_stories is not None:
        kw["n_stories"] = n_stories
    try:
        return CorpusConfig(**kw)
    except ValidationError as e:
        raise UserError(_validation_message(e, "corpus.")) from None


def run_corpus(corpus: str, corpora_dir: Path, seed: int, n_stories: Optional[int], support: Optional[float]):
    """The corpus of ``ungrok train --corpus``: a built real-text corpus when ``corpus`` is
    ``built:<name>`` or names one under ``corpora_dir`` (pinned to its stream's sha256), else a
    preset or ``hf:<folder>``."""
    from runner.config import CorpusConfig
    from runner.data.corpora import TEXT_FORMAT

    name = corpus.removeprefix("built:")
    mf = corpora_dir / name / "manifest.json"
    is_text = mf.exists() and json.loads(mf.read_text()).get("format") == TEXT_FORMAT
    if not corpus.startswith("built:") and not (is_text and ":" not in corpus):
        return corpus_config(corpus, seed, n_stories, support, "text")
    if not is_text:
        raise UserError(f"corpus {corpus!r}: no real-text corpus {name!r} under {corpora_dir}; build it with "
                        f"`ungrok corpus build --source ... --name {name} --out {corpora_dir}`")
    try:
        return CorpusConfig(name=f"built:{name}", sha256=json.loads(mf.read_text())["sha256"])
    except ValidationError as e:
        raise UserError(_validation_message(e, "corpus.")) from None


def rows_fill_context(cfg):
    """A run on a built corpus reads rows as long as its context (``story_tokens = n_ctx``)."""
    from runner.config import RunConfig

    if not cfg.corpus.is_built or cfg.corpus.story_tokens == cfg.model.n_ctx:
        return cfg
    data = cfg.model_dump(mode="json")
    data["corpus"]["story_tokens"] = cfg.model.n_ctx
    return RunConfig(**data)


def _source_progress(p, task):
    """Show the phases of a real-text build on a rich progress line."""
    t0 = time.time()

    def show(phase: str, n_bytes: int, n_tokens: int) -> None:
        if phase == "tokenizer":
            p.update(task, description="preparing the tokenizer (training reads the first text)")
            return
        rate = n_bytes / 1e6 / max(time.time() - t0, 1e-9)
        p.update(task, description=f"tokenizing: {n_bytes / 1e6:,.0f} MB of text, {n_tokens:,} tokens "
                                   f"({rate:.1f} MB/s)")

    return show


def _build_from_source(spec_kw: dict, out: Path, workers: Optional[int]) -> None:
    from rich.progress import Progress

    from runner.data.corpora import CorpusError
    from runner.data.textcorpus import TextCorpusSpec, build_text_corpus

    try:
        spec = TextCorpusSpec(**spec_kw)
    except ValidationError as e:
        raise UserError(_validation_message(e)) from None
    t0 = time.time()
    with Progress(console=console, transient=True) as p:
        task = p.add_task(f"building {spec.name}", total=None)
        try:
            path = build_text_corpus(spec, out, workers=workers, progress=_source_progress(p, task))
        except CorpusError as e:
            raise UserError(str(e)) from None
    m = json.loads((path / "manifest.json").read_text())
    console.print(f"[bold]{path}[/]: {m['n_docs']:,} documents, {m['n_text_bytes'] / 1e6:,.1f} MB of text, "
                  f"{m['n_tokens']:,} tokens{' (capped)' if m['truncated'] else ''}, vocabulary {m['vocab_size']:,}, "
                  f"sha256 {m['sha256'][:16]}… ({time.time() - t0:.0f} s)")
    console.print(f"train on it: ungrok train --corpus {spec.name} --out {out.parent}", markup=False)


@corpus_app.command("build")
def corpus_build(
    preset: Optional[str] = typer.Option(
        None, help="a corpus of the built-in world: stories | web | synthetic | hf:<dataset folder> (word-level "
                   "tokenizer); the default (web) when --source is not given"),
    source: Optional[str] = typer.Option(
        None, help="real text: hf:<hub name or datasets folder> | text:<.jsonl/.txt files or glob> (needs --name)"),
    name: Optional[str] = typer.Option(None, help="with --source: the corpus's name (its folder under --out)"),
    tokenizer: str = typer.Option("bpe:8192", help="with --source: bpe:<size> (byte-level BPE trained on the "
                                                   "text) or a tokenizer.json file / tokenizer folder"),
    max_tokens: Optional[int] = typer.Option(None, help="with --source: cap on the token stream (default: all)"),
    split: str = typer.Option("train", help="with --source hf:: the split to read"),
    subset: Optional[str] = typer.Option(None, help="with --source hf:<hub name>: the dataset configuration"),
    revision: Optional[str] = typer.Option(None, help="with --source hf:<hub name>: branch, tag or commit"),
    eot_token: str = typer.Option("<|endoftext|>", help="with --source: the end-of-text token put before every "
                                                        "document (must be in a given tokenizer)"),
    bpe_train_mb: int = typer.Option(256, min=1, help="with --tokenizer bpe:<size>: MB of text to train it on"),
    workers: Optional[int] = typer.Option(None, min=1, help="with --source: tokenizing processes (default: cores)"),
    seed: int = typer.Option(0, help="generator seed (--preset)"),
    out: Path = typer.Option(Path("runs/corpora"), help="parent folder of built corpora"),
    n_stories: Optional[int] = typer.Option(None, help="rows (stories) of a --preset corpus; default 160,000"),
    support: Optional[float] = typer.Option(None, help="override the preset's support (0..1]"),
    text_column: str = typer.Option("text", help="text column of an hf: dataset or JSONL files"),
) -> None:
    """Build a corpus (deterministic from its settings) and print its manifest's figures.

    --preset: the built-in world (word-level). --source: real text, tokenized with a BPE, written
    in shards by every core, and trained on with `ungrok train --corpus <name>`."""
    from rich.progress import Progress

    from runner.data.corpora import CorpusError, build_corpus

    if source is None:
        if name is not None:
            raise UserError("--name is for a real-text corpus: give --source hf:<...> or text:<...> with it")
        cfg = corpus_config(preset or "web", seed, n_stories, support, text_column)
        with Progress(console=console, transient=True) as p:
            task = p.add_task(f"building {cfg.dirname}", total=cfg.n_stories)
            try:
                path = build_corpus(cfg, out, progress=lambda n: p.update(task, completed=n))
            except CorpusError as e:
                raise UserError(str(e)) from None
        m = json.loads((path / "manifest.json").read_text())
        console.print(f"[bold]{path}[/]: {m['n_rows']:,} rows, {m['n_tokens']:,} tokens, sha256 {m['sha256'][:16]}…")
        return
    if preset is not None:
        raise UserError("give either --preset (the built-in world) or --source (real text), not both")
    if name is None:
        raise UserError("--source needs --name <name> (the corpus's folder; train with --corpus <name>)")
    _build_from_source({"name": name, "source": source, "tokenizer": tokenizer, "text_column": text_column,
                        "split": split, "config": subset, "revision": revision, "max_tokens": max_tokens,
                        "eot_token": eot_token, "bpe_train_bytes": bpe_train_mb << 20}, out, workers)
