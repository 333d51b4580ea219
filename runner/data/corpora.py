"""Corpora: the built-in synthetic world (``stories``, ``web``, ``synthetic``) and any Hugging
Face dataset on disk (``hf:<path>``), stored as a ``datasets`` folder of fixed-length token rows
with a tokenizer and a manifest (token count, sha256 of the token stream, generator config); and
real-text corpora built by ``runner.data.textcorpus`` (``built:<name>``), stored as one flat token
stream (``tokens.npy``, memory-mapped when read) cut into rows of the run's length on load.

The synthetic corpora are *stationary*: every story is drawn from the same distribution, so the
rule's evidence is present at the same rate from the first batch to the last. ``stories`` and
``web`` share vocabulary, templates, sentence mix and story length and differ only in
``support`` (P(rule's answer shown | the in-context copy disagrees)). Any collapse therefore
comes from training dynamics, never from a curriculum.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runner._io import make_temp_dir, utcnow
from runner.config import CorpusConfig
from runner.world import vocab as V
from runner.world.articles import ArticleRule, world_words
from runner.world.presets import PRESETS, SyntheticSpec
from runner.world.rules import RULES, InductionRule, filler_sentence

CHUNK = 10_000  # stories per independently seeded chunk
TEXT_FORMAT = "ungrok-text-stream-v1"  # manifest "format" of a real-text corpus (runner.data.textcorpus)


class CorpusError(ValueError):
    """A corpus cannot be built or read; the message says why and what to do."""


# ---- tokenizer ---------------------------------------------------------------------------------
def preset_words(preset: str | None = None) -> list[str]:
    """The vocabulary of a built-in preset's corpus: the world's words, plus the extra words of
    the opt-in families it draws (the a/an presets'), appended so every base id is unchanged."""
    if preset is None:
        return V.all_words()
    return world_words(name for name, _ in PRESETS.get(preset).p_family)


def world_tokenizer(preset: str | None = None):
    """The built-in word-level tokenizer: one id per world word, fixed order, no training
    (``preset``: that preset's vocabulary, see :func:`preset_words`; default the base world's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(preset_words(preset))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=V.UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def train_tokenizer(texts, vocab_size: int):
    """A word-level tokenizer trained on the texts (most frequent words, specials first)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=V.UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=V.SPECIAL_TOKENS)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# ---- synthetic generation ------------------------------------------------------------------------
def generate_story(rng: random.Random, spec: SyntheticSpec, support: float, length: int,
                   reuse: float | None = None) -> list[str]:
    """Sentences drawn i.i.d. from the spec's mix until the next one would not fit; ``reuse``
    (None: the spec's ``p_reuse``) is P(a family sentence reuses a key of its story)."""
    reuse = spec.p_reuse if reuse is None else reuse
    words = [V.BOS]
    states: dict[str, dict[str, str]] = {name: {} for name, _ in spec.p_family}
    families = [(RULES.get(name), p) for name, p in spec.p_family]
    while True:
        r, acc, sent = rng.random(), 0.0, None
        for fam, p in families:
            acc += p
            if r < acc:
                assert isinstance(fam, (InductionRule, ArticleRule))
                sent = fam.emit(rng, states[fam.name], support, reuse)
                break
        if sent is None:
            sent = filler_sentence(rng)
        if len(words) + len(sent) > length:
            return words
        words.extend(sent)


def synthetic_rows(cfg: CorpusConfig, progress=None) -> np.ndarray:
    """``(n_stories, story_tokens)`` int32 ids, padded with ``<pad>``; chunk c uses its own seed."""
    spec = PRESETS.get(cfg.name)
    support = cfg.support if cfg.support is not None else spec.support
    reuse = cfg.reuse if cfg.reuse is not None else spec.p_reuse
    vocab = {w: i for i, w in enumerate(preset_words(cfg.name))}
    pad = vocab[V.PAD]
    rows = np.full((cfg.n_stories, cfg.story_tokens), pad, dtype=np.int32)
    for start in range(0, cfg.n_stories, CHUNK):
        rng = random.Random(f"ungrok/{cfg.name}/{cfg.seed}/{support}/{start // CHUNK}")
        for i in range(start, min(start + CHUNK, cfg.n_stories)):
            ids = [vocab[w] for w in generate_story(rng, spec, support, cfg.story_tokens, reuse)]
            rows[i, : len(ids)] = ids
        if progress is not None:
            progress(min(start + CHUNK, cfg.n_stories))
    return rows


def hf_rows(cfg: CorpusConfig):
    """Rows from a ``datasets`` folder: train a tokenizer on its text, pack documents (each
    prefixed by ``<bos>``) into rows of ``story_tokens``; the tail that does not fill a row is dropped."""
    from datasets import DatasetDict, load_from_disk

    path = cfg.name[3:]
    if not Path(path).exists():
        raise CorpusError(f"corpus {cfg.name!r}: no dataset folder at {path!r}; save one with Dataset.save_to_disk")
    ds = load_from_disk(path)
    if isinstance(ds, DatasetDict):  # saved with its splits: read the first split by name
        ds = ds[sorted(ds.keys())[0]]
    if cfg.text_column not in ds.column_names:
        raise CorpusError(
            f"corpus {cfg.name!r}: text_column {cfg.text_column!r} not in columns {ds.column_names}; "
            "pass --text-column"
        )
    texts: list[str] = list(ds[cfg.text_column])
    tok = train_tokenizer(texts, cfg.vocab_size)
    bos = tok.token_to_id(V.BOS)
    if bos is None:
        raise CorpusError(f"corpus {cfg.name!r}: the trained tokenizer has no {V.BOS} token")
    stream: list[int] = []
    for enc in tok.encode_batch(texts):
        stream.append(bos)
        stream.extend(enc.ids)
    n = len(stream) // cfg.story_tokens
    if n == 0:
        raise CorpusError(f"corpus {cfg.name!r}: fewer than {cfg.story_tokens} tokens; too small to train on")
    rows = np.asarray(stream[: n * cfg.story_tokens], dtype=np.int32).reshape(n, cfg.story_tokens)
    return rows, tok


# ---- on disk ---------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """A built corpus on disk: rows of token ids, its tokenizer and manifest."""

    path: Path
    rows: np.ndarray
    manifest: dict
    stream: np.ndarray | None = None  # a real-text corpus's flat token stream (rows are views of it)

    @property
    def tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.path / "tokenizer.json"))

    @property
    def pad_id(self) -> int:
        """The padding id (-1: none, every position is a real token; a loss may ignore it)."""
        return int(self.manifest["pad_id"])

    @property
    def fill_id(self) -> int:
        """A real token id to fill unused positions of an input (never read by a loss or score)."""
        return self.pad_id if self.pad_id >= 0 else int(self.manifest.get("eot_id", 0))

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])


def stream_sha256(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<i4").tobytes()).hexdigest()


def build_corpus(cfg: CorpusConfig, out_root: str | Path, progress=None) -> Path:
    """Build ``cfg`` under ``out_root/<cfg.dirname>`` (atomically) unless it is already there.

    Writes ``dataset/`` (a ``datasets`` folder, column ``input_ids``), ``tokenizer.json`` and
    ``manifest.json``. A folder that exists with a different config is an error, never overwritten.
    """
    dest = Path(out_root) / cfg.dirname
    if cfg.is_built:
        return built_corpus_path(cfg, out_root)
    config = cfg.model_dump(mode="json", exclude={k for k in ("sha256", "reuse") if getattr(cfg, k) is None})
    if (dest / "manifest.json").exists():
        existing = json.loads((dest / "manifest.json").read_text())["config"]
        if existing != config:
            raise CorpusError(f"{dest} holds a different corpus config; remove it or choose another --out")
        return dest
    if cfg.is_hf:
        rows, tok = hf_rows(cfg)
        generator = {"kind": "hf", "path": cfg.name[3:], "text_column": cfg.text_column}
    else:
        rows, tok = synthetic_rows(cfg, progress), world_tokenizer(cfg.name)
        spec = PRESETS.get(cfg.name)
        generator = {"kind": "synthetic", **asdict(spec),
                     "support": cfg.support if cfg.support is not None else spec.support, "chunk": CHUNK}
        if cfg.reuse is not None:
            generator["p_reuse"] = cfg.reuse
    return write_corpus(dest, rows, tok, config, generator)


def built_corpus_path(cfg: CorpusConfig, out_root: str | Path) -> Path:
    """The folder of the real-text corpus ``built:<name>`` under ``out_root``, checked: it exists
    and, when ``cfg.sha256`` pins it, holds that token stream."""
    dest = Path(out_root) / cfg.dirname
    mf = dest / "manifest.json"
    if not mf.exists():
        raise CorpusError(f"corpus {cfg.name!r}: no built corpus at {dest}; build it with `ungrok corpus build "
                          f"--source <hf:... or text:...> --name {cfg.label} --out {out_root}`")
    manifest = json.loads(mf.read_text())
    if manifest.get("format") != TEXT_FORMAT:
        raise CorpusError(f"corpus {cfg.name!r}: {dest} is not a real-text corpus; rebuild it with "
                          "`ungrok corpus build --source ...` or choose another name")
    if cfg.sha256 is not None and manifest["sha256"] != cfg.sha256:
        raise CorpusError(f"corpus {cfg.name!r}: {dest} holds token stream {manifest['sha256'][:12]}…, but the run "
                          f"was configured on {cfg.sha256[:12]}… (rebuilt since?); restore that corpus, or start "
                          "a new run on the corpus as it is now")
    return dest


def write_corpus(dest: Path, rows: np.ndarray, tok, config: dict, generator: dict, **extra) -> Path:
    """Write a corpus folder atomically (temporary sibling, then rename): ``dataset/``,
    ``tokenizer.json`` and ``manifest.json`` (token count and sha256 of the stream). A finished
    copy written meanwhile by a concurrent builder of the same corpus is kept."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bar()
    pad = tok.token_to_id(V.PAD)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest.parent, f".{dest.name}.tmp-")  # the umask's mode, not 0700
    try:
        Dataset.from_dict({"input_ids": rows}).save_to_disk(str(tmp / "dataset"))
        tok.save(str(tmp / "tokenizer.json"))
        manifest = {
            "config": config,
            "generator": generator,
            "n_rows": int(rows.shape[0]),
            "row_tokens": int(rows.shape[1]),
            "n_tokens": int((rows != pad).sum()),
            "pad_id": int(pad),
            "vocab_size": int(tok.get_vocab_size()),
            "sha256": stream_sha256(rows),
            "created": utcnow(timespec="seconds"),
            **extra,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "manifest.json").exists():  # not a concurrent builder's finished copy
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process built the same corpus first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def load_corpus(path: str | Path, row_tokens: int | None = None) -> Corpus:
    """Open a built corpus folder; the token stream is checked against the manifest's sha256.

    ``row_tokens``: for a real-text corpus, the row length to cut its stream into (default: the
    manifest's ``row_tokens``); the tail that does not fill a row is left out of ``rows``."""
    import datasets
    from datasets import Dataset, load_from_disk

    datasets.disable_progress_bar()
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.exists():
        raise CorpusError(f"{path} is not a built corpus (no manifest.json); build it with `ungrok corpus build`")
    manifest = json.loads(mf.read_text())
    if manifest.get("format") == TEXT_FORMAT:
        return _load_text_corpus(path, manifest, row_tokens)
    ds = load_from_disk(str(path / "dataset"))
    if not isinstance(ds, Dataset):
        raise CorpusError(f"{path}/dataset holds splits, not the one token table a built corpus writes; rebuild it")
    # Rows have a fixed length: read the arrow column's flat values (memory-mapped) in one go.
    col = ds.data.column("input_ids").combine_chunks()
    rows = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.int32).reshape(
        len(ds), int(manifest["row_tokens"]))
    if stream_sha256(rows) != manifest["sha256"]:
        raise CorpusError(f"{path}: token stream does not match the manifest's sha256; "
                          "the corpus is corrupt, rebuild it")
    return Corpus(path=path, rows=rows, manifest=manifest)


def _load_text_corpus(path: Path, manifest: dict, row_tokens: int | None) -> Corpus:
    """A real-text corpus: its stream memory-mapped (read-only; never copied whole), hashed block
    by block against the manifest, and cut into rows of ``row_tokens``."""
    from runner.data.shards import stream_digest

    stream = np.load(path / "tokens.npy", mmap_mode="r")
    if stream.ndim != 1 or stream.shape[0] != manifest["n_tokens"] or stream_digest(stream) != manifest["sha256"]:
        raise CorpusError(f"{path}: token stream does not match the manifest (length or sha256); the corpus is "
                          "corrupt, rebuild it")
    length = int(row_tokens or manifest["row_tokens"])
    n = stream.shape[0] // length
    return Corpus(path=path, rows=stream[: n * length].reshape(n, length), manifest=manifest, stream=stream)
