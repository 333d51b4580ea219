"""ungrok.runner: the core layer, in sub-packages by concern (map: ``docs/architecture.md``).

``world`` (rule families, probes, presets) -> ``data`` (corpora, streams, support counts) ->
``train`` (the DeepSpeed loop and its callbacks) -> ``store`` (a run's folder and zarr store) ->
``analysis`` (prereg, verdicts, dose-response, audit) -> ``report`` (tables, plots, HTML).
Imports none of ``mech``, ``interventions`` or ``cluster`` (enforced by ``tests/unit/test_layers.py``
and the import-linter contracts in ``pyproject.toml``).
"""

__version__ = "0.1.0"
