"""Mechanistic analysis of ungrok runs: capture activations per checkpoint, localize the competitor.

- :func:`mech.capture.capture_run` — activations at the prediction position for every checkpoint
  into the run's zarr group (``<group>/mech/<family>``), published atomically.
- :func:`mech.localize.localize_run` — direct logit attribution, activation patching, attention to
  the cue and the competitor's evidence, the embedding-level scalar, a ranked table of components
  whose competitor contribution grows as CM crosses zero, heatmaps, and an ablation check.
- :func:`mech.appendix.appendix_run` — the paper's mechanism measures (appendix I) read from the
  capture: logit-gap decomposition, carrier head, cue decodability, peak<->final patching,
  direction specificity, the bootstrap of the drop; :mod:`mech.appendix_report` shows runs side by side.
- :func:`mech.plots.report_assets` — HTML/PNG paths for a report.
- :func:`mech.names.hook_name` — the one hook-name helper (also the zarr array paths).
- :mod:`mech.public` — public checkpoint series (Pythia...) scored like trained runs.

``mech`` imports only ``runner`` (and TransformerLens, torch, zarr). See docs/mech.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: importing mech stays free of torch
    from .appendix import appendix_run
    from .capture import capture_run, open_capture
    from .localize import localize_run
    from .names import hook_name
    from .plots import report_assets

__all__ = ["capture_run", "open_capture", "localize_run", "appendix_run", "report_assets", "hook_name"]


def __getattr__(name: str):  # lazy: importing mech does not import torch
    if name in ("capture_run", "open_capture"):
        from . import capture

        return getattr(capture, name)
    if name == "localize_run":
        from .localize import localize_run

        return localize_run
    if name == "appendix_run":
        from .appendix import appendix_run

        return appendix_run
    if name == "report_assets":
        from .plots import report_assets

        return report_assets
    if name == "hook_name":
        from .names import hook_name

        return hook_name
    raise AttributeError(name)
