"""Mechanistic analysis of ungrok runs: capture activations per checkpoint, localize the competitor.

- :func:`mech.capture.capture_run` — activations at the prediction position for every checkpoint
  into the run's zarr group (``<group>/mech/<family>``), published atomically.
- :func:`mech.localize.localize_run` — direct logit attribution, activation patching, attention to
  the cue and the competitor's evidence, the embedding-level scalar, a ranked table of components
  whose competitor contribution grows as CM crosses zero, heatmaps, and an ablation check.
- :func:`mech.plots.report_assets` — HTML/PNG paths for a report.
- :func:`mech.names.hook_name` — the one hook-name helper (also the zarr array paths).
- :mod:`mech.public` — public checkpoint series (Pythia...) scored like trained runs.

``mech`` imports only ``runner`` (and TransformerLens, torch, zarr). See docs/mech.md.
"""

from __future__ import annotations

__all__ = ["capture_run", "open_capture", "localize_run", "report_assets", "hook_name"]


def __getattr__(name: str):  # lazy: importing mech does not import torch
    if name in ("capture_run", "open_capture"):
        from . import capture

        return getattr(capture, name)
    if name == "localize_run":
        from .localize import localize_run

        return localize_run
    if name == "report_assets":
        from .plots import report_assets

        return report_assets
    if name == "hook_name":
        from .names import hook_name

        return hook_name
    raise AttributeError(name)
