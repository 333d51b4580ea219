"""Any battery on any finished run: score every saved checkpoint after training (``ungrok
rescore``), and the one loader that opens a checkpoint for scoring, an ungrok run's or a Hugging
Face folder's (``ungrok public`` uses it too).

A rescore of battery ``<name>`` (the file's name without ``.jsonl``, or ``--name``) writes the
group ``rescore/<name>`` under the run's group, in the training-time group's layout
(:mod:`runner.store`): per-item log-probs and token counts, accuracy, the length-normalised
difference, CM and PM per checkpoint, and ``train/loss``/``train/lr`` copied from training at the
same steps. Its ``summary.json`` and plot go to ``<run>/rescore/<name>/``; ``show``, ``verdict``
and ``report --battery <name>`` read it (:func:`runner.store.battery_view`).

Each checkpoint's row is appended and only then counted (``RunStore.append``), so a rescore
killed at any point resumes at the next unscored checkpoint. Checkpoints are scored with the
routine training uses (:func:`runner.scoring.append_scores`), the start token training used
(the store's ``bos_id``), and the run's thread count: the training battery rescored equals its
training-time scores bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from runner._io import hold_folder
from runner._progress import Ticker
from runner.config import RunConfig
from runner.model import build_model
from runner.scoring import (
    EncodedBattery,
    append_scores,
    battery_info,
    check_family_names,
    check_unknown,
    encode_battery,
    init_scores,
    score_attrs,
    stored_bos,
)
from runner.store import RunDir, RunStore, battery_view
from runner.trajectory import write_summary
from runner.world import vocab as V
from runner.world.batteries import ProbeItem, read_battery


class RescoreError(ValueError):
    """A run or battery cannot be rescored; the message says which and what to do."""


@dataclass
class Scorable:
    """A checkpoint ready to score: the model, its tokenizer and how its inputs are built."""

    model: Any
    tokenizer: Any
    bos_id: int | None  # prepended to every prefix unless None
    pad_id: int
    n_ctx: int

    def encode(self, items: list[ProbeItem]) -> EncodedBattery:
        return encode_battery(items, self.tokenizer, self.bos_id, self.n_ctx, pad_id=self.pad_id)


def weight_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's saved weights, in order."""
    return [int(p.stem.split("_")[1]) for p in RunDir(run_dir).weight_files()]


def _training_store(run: RunDir) -> RunStore:
    path, group = run.training_location()
    if not (path / group / "zarr.json").exists():
        raise RescoreError(f"{run.path}: no training-time scores (expected a zarr group at {path}/{group})")
    return RunStore(path, group)


class _RunModel:
    """An ungrok run's model, built once and loaded with the weights of any saved step."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.cfg = RunConfig.model_validate_json(run.config.read_text())
        d_vocab = json.loads(run.meta.read_text())["d_vocab"]
        self.model = build_model(self.cfg.model, d_vocab, self.cfg.train.seed)

    def at(self, step: int):
        from safetensors.torch import load_file

        path = self.run.weights(step)
        if not path.exists():
            raise RescoreError(f"{self.run.path}: no weights at step {step} ({path})")
        self.model.load_state_dict(load_file(str(path)))
        return self.model.eval()


def open_run_checkpoint(run_dir: str | Path, step: int) -> Scorable:
    """An ungrok run's checkpoint at ``step``, with the start token its training-time scores used."""
    from tokenizers import Tokenizer

    run = RunDir(run_dir)
    if not run.is_run():
        raise RescoreError(f"{run.path} is not a run folder (no run.json and config.json)")
    tok = Tokenizer.from_file(str(run.tokenizer))
    loaded = _RunModel(run)
    pad = tok.token_to_id(V.PAD)
    return Scorable(loaded.at(step), tok, stored_bos(_training_store(run).attrs, tok), 0 if pad is None else pad,
                    loaded.cfg.model.n_ctx)


def open_hf_checkpoint(folder: str | Path, bos: bool = False) -> Scorable:
    """A Hugging Face ``save_pretrained`` folder as a TransformerBridge (eval mode) with its own
    tokenizer; no network. ``bos``: prepend the tokenizer's start token (the paper scores public
    checkpoints without it, the default)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)
    bridge.eval()
    tok = bridge.tokenizer
    if tok is None:
        raise RescoreError(f"{folder}: no tokenizer saved beside the model")
    bos_id = tok.bos_token_id if bos else None
    if bos and bos_id is None:
        raise RescoreError(f"{folder}: the tokenizer has no start token; score without --bos")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    return Scorable(bridge, tok, bos_id, int(pad), int(bridge.cfg.n_ctx))


def plan_rescore(run_dir: str | Path | RunDir, battery: str | Path, name: str | None = None,
                 max_unknown: float = 0.5) -> tuple[RunStore, EncodedBattery, dict, RunConfig]:
    """Everything checked before a row is written (no model is built): the run is finished, the
    battery readable, its family names usable, few enough items hold unknown tokens. Returns the
    training-time store, the encoded battery, the battery's record and the run's config."""
    from tokenizers import Tokenizer

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.is_run():
        raise RescoreError(f"{run.path} is not a run folder (no run.json and config.json); pass runs/<run-id>")
    trained = _training_store(run)
    if not trained.attr("complete"):
        raise RescoreError(f"{run.path}: the run has not finished; rescore scores finished runs (train it to the "
                           "end first)")
    items = read_battery(battery)
    check_family_names(items, str(battery))
    info = battery_info(battery, name)
    cfg = RunConfig.model_validate_json(run.config.read_text())
    tok = Tokenizer.from_file(str(run.tokenizer))
    pad = tok.token_to_id(V.PAD)
    enc = encode_battery(items, tok, stored_bos(trained.attrs, tok), cfg.model.n_ctx, pad_id=0 if pad is None else pad)
    check_unknown(enc, max_unknown, f"battery {battery} on {run.name}")
    return trained, enc, info, cfg


def _todo(run: RunDir, store: RunStore) -> tuple[list[int], list[int]]:
    """(every saved step, the steps after the last one ``store`` holds)."""
    done = [int(x) for x in store.steps()]
    steps = weight_steps(run.path)
    return steps, [x for x in steps if not done or x > max(done)]


def _score_steps(store: RunStore, loaded: _RunModel, enc: EncodedBattery, trained: RunStore, todo: list[int],
                 threads: int, on_row: Callable[[int], None] | None,
                 progress: Callable[[str], None] | None = None) -> None:
    """Append one row per step of ``todo``, under training's thread count (the same arithmetic, bit
    for bit); loss and lr are training's at the same step. ``progress``: where plain progress lines
    go (``runner._progress.Ticker``: every tenth of the checkpoints or 30 s), None for none."""
    loss = dict(zip(trained.steps().tolist(), trained.series("train/loss").tolist()))
    lr = dict(zip(trained.steps().tolist(), trained.series("train/lr").tolist()))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ticker = Ticker(f"rescore {loaded.run.name}", len(todo), unit="checkpoints", log=progress) if progress else None
        for i, step in enumerate(todo, 1):
            append_scores(store, loaded.at(step), enc, step, loss.get(step, float("nan")), lr.get(step, float("nan")))
            if on_row is not None:
                on_row(step)
            if ticker is not None and i == len(todo):
                ticker.done_line(i, f"step {step}")
            elif ticker is not None:
                ticker.update(i, f"step {step}")
    finally:
        torch.set_num_threads(before)


def rescore_run(run_dir: str | Path, battery: str | Path, *, name: str | None = None, max_unknown: float = 0.5,
                log: Callable[[str], None] = print, on_row: Callable[[int], None] | None = None,
                progress: Callable[[str], None] | None = print) -> dict:
    """Score ``battery`` at every saved checkpoint of the finished run ``run_dir`` not yet scored
    into its group ``rescore/<name>``; returns what it did. ``on_row(step)`` is called after each
    row is written (a progress hook); ``progress`` receives plain progress lines (None: silent)."""
    run = RunDir(run_dir)
    trained, enc, info, cfg = plan_rescore(run, battery, name, max_unknown)
    with hold_folder(run.rescore_dir(info["name"]), f"the rescore of {info['name']} in"):  # one writer
        path, group = run.rescore_location(info["name"])
        store = RunStore(path, group)
        init_scores(store, enc, {"run_id": trained.attr("run_id"), "rescore_of": run.training_location()[1] or "/",
                                 **score_attrs(enc, info)})
        steps, todo = _todo(run, store)
        _score_steps(store, _RunModel(run), enc, trained, todo, cfg.train.threads, on_row, progress)
        store.mark_complete()
        with battery_view(info["name"]):
            write_summary(run.path)
    log(f"{run.name}: battery {info['name']}: scored {len(todo)} checkpoint(s), {len(steps) - len(todo)} already "
        f"scored; {enc.token_report()['n_unknown_items']} of {enc.n} items hold unknown tokens")
    return {"run": str(run.path), "battery": info["name"], "group": group, "scored": len(todo),
            "skipped": len(steps) - len(todo), "steps": steps, "bos": enc.bos_id is not None,
            "tokens": enc.token_report(), "families": list(dict.fromkeys(it.family for it in enc.items))}
