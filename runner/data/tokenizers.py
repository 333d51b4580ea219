"""Tokenizers for real-text corpora: a byte-level BPE trained on the corpus, or an existing file.

A tokenizer spec is one of:

- ``bpe:<size>``: a byte-level BPE (GPT-2 style: ``ByteLevel`` pre-tokenizer without a prefix
  space, ``ByteLevel`` decoder, the 256 byte symbols as its initial alphabet, so no text is ever
  unknown) trained with ``tokenizers`` on the first ``train_bytes`` of the corpus's documents, in
  their order. ``<|endoftext|>`` is its only special token, id 0 — the layout of the paper's two
  tokenizers (``shared/reference/tokenizers/``). 8,192 for real text, as in the paper.
- a path: a ``tokenizers`` JSON file (``tokenizer.json``) or a folder holding one (a Hugging Face
  tokenizer folder). Its end-of-text token must be in the vocabulary (``<|endoftext|>`` by
  default; a folder's ``tokenizer_config.json`` ``eos_token`` is used when that is missing).

Registered in :data:`TOKENIZER_KINDS` by prefix (``bpe``); a spec with no known prefix is a path.
The chosen tokenizer is saved with the corpus as ``tokenizer.json`` and named in the manifest by
the sha256 of that file's bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.data.corpora import CorpusError
from runner.registry import Registry

EOT = "<|endoftext|>"
MIN_BPE = 257 + 1  # 256 byte symbols + <|endoftext|> + at least one merge


@dataclass
class ChosenTokenizer:
    """The tokenizer a corpus is built with, its end-of-text id and what the manifest records."""

    tokenizer: object  # tokenizers.Tokenizer
    eot_id: int
    record: dict

    @property
    def json(self) -> str:
        return self.tokenizer.to_str()  # pyright: ignore[reportAttributeAccessIssue]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())  # pyright: ignore[reportAttributeAccessIssue]


# A kind: (argument after the prefix, documents, eot token, train_bytes) -> ChosenTokenizer
TOKENIZER_KINDS: Registry[Callable[..., ChosenTokenizer]] = Registry("tokenizer kind")


def needs_documents(spec: str) -> bool:
    """Does building this tokenizer read the corpus (a trained one) or not (a file)?"""
    prefix, sep, _ = spec.partition(":")
    return bool(sep) and prefix in TOKENIZER_KINDS


def check_tokenizer_spec(spec: str, eot: str = EOT) -> ChosenTokenizer | None:
    """Validate ``spec`` before any text is read: a file is loaded (and returned), a ``bpe:<size>``
    is checked for its size. Raises :class:`CorpusError` naming the fix."""
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in TOKENIZER_KINDS:
        _bpe_size(arg)
        return None
    return load_tokenizer_file(spec, eot)


def choose_tokenizer(spec: str, documents: Callable[[], Iterable[str]], *, eot: str = EOT,
                     train_bytes: int = 256 << 20) -> ChosenTokenizer:
    """The tokenizer named by ``spec``; a trained kind reads ``documents()`` (first ``train_bytes``)."""
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in TOKENIZER_KINDS:
        return TOKENIZER_KINDS.get(prefix)(arg, documents, eot, train_bytes)
    return load_tokenizer_file(spec, eot)


# ---- trained byte-level BPE --------------------------------------------------------------------
def _bpe_size(arg: str) -> int:
    try:
        size = int(arg.replace("_", ""))
    except ValueError:
        size = -1
    if size < MIN_BPE:
        raise CorpusError(f"tokenizer bpe:{arg}: give a vocabulary size >= {MIN_BPE}, e.g. bpe:8192")
    return size


def _first_bytes(docs: Iterable[str], limit: int) -> Iterator[str]:
    """The documents in order until ``limit`` UTF-8 bytes have been given (the last one whole)."""
    n = 0
    for d in docs:
        if n >= limit:
            return
        n += len(d.encode("utf-8"))
        yield d


def byte_level_bpe(size: int, texts: Iterable[str], eot: str = EOT):
    """Train a byte-level BPE of ``size`` tokens on ``texts`` (``eot`` special at id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # pyright: ignore[reportAttributeAccessIssue]
    tok.decoder = decoders.ByteLevel()  # pyright: ignore[reportAttributeAccessIssue]
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=[eot], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _train_bpe(arg: str, documents: Callable[[], Iterable[str]], eot: str, train_bytes: int) -> ChosenTokenizer:
    size = _bpe_size(arg)
    counted = {"bytes": 0, "docs": 0}

    def texts() -> Iterator[str]:
        for d in _first_bytes(documents(), train_bytes):
            counted["bytes"] += len(d.encode("utf-8"))
            counted["docs"] += 1
            yield d

    tok = byte_level_bpe(size, texts(), eot)
    if counted["docs"] == 0:
        raise CorpusError("the source holds no documents to train a tokenizer on; check --source and --text-column")
    eot_id = tok.token_to_id(eot)
    assert eot_id is not None
    record = {"kind": "bpe", "spec": f"bpe:{size}", "vocab_size": int(tok.get_vocab_size()),
              "trained_on_bytes": counted["bytes"], "trained_on_docs": counted["docs"], "train_bytes_cap": train_bytes}
    return ChosenTokenizer(tok, int(eot_id), record)


TOKENIZER_KINDS.register("bpe", _train_bpe)


# ---- an existing tokenizer ---------------------------------------------------------------------
def _tokenizer_file(path: Path) -> tuple[Path, str | None]:
    """(the tokenizer JSON, the folder's eos token if any) for a file or a tokenizer folder."""
    if path.is_dir():
        eos = None
        cfg = path / "tokenizer_config.json"
        if cfg.exists():
            try:
                tok_eos = json.loads(cfg.read_text()).get("eos_token")
                eos = tok_eos.get("content") if isinstance(tok_eos, dict) else tok_eos
            except (json.JSONDecodeError, AttributeError):
                eos = None
        if not (path / "tokenizer.json").exists():
            raise CorpusError(f"tokenizer folder {path} has no tokenizer.json; pass a tokenizers JSON file, a "
                              "folder holding tokenizer.json, or bpe:<size> to train one")
        return path / "tokenizer.json", eos
    return path, None


def load_tokenizer_file(spec: str, eot: str = EOT) -> ChosenTokenizer:
    """Load a tokenizer file or folder; its end-of-text token must exist."""
    from tokenizers import Tokenizer

    path = Path(spec).expanduser()
    if not path.exists():
        raise CorpusError(f"tokenizer {spec!r}: no such file or folder; pass a tokenizer.json, a folder holding "
                          "one, or bpe:<size> to train one")
    file, folder_eos = _tokenizer_file(path)
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a plain Exception on bad JSON
        raise CorpusError(f"tokenizer {str(file)!r} does not load ({str(e).splitlines()[0][:120]}); pass a "
                          "`tokenizers` JSON file (tokenizer.json) or bpe:<size>") from None
    eot_id = tok.token_to_id(eot)
    used = eot
    if eot_id is None and folder_eos:
        eot_id, used = tok.token_to_id(folder_eos), folder_eos
    if eot_id is None:
        raise CorpusError(f"tokenizer {str(file)!r} has no end-of-text token {eot!r}; pass --eot-token <its "
                          "end-of-text token>")
    record = {"kind": "file", "spec": str(path.resolve()), "vocab_size": int(tok.get_vocab_size()), "eot_token": used}
    return ChosenTokenizer(tok, int(eot_id), record)
