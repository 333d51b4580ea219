"""Corpus edits: kill (flip support in place), rescue (inject support at a dose), their
disjointness gate. Importing the package registers the ``kill`` and ``rescue`` doses and the
built-in families' flip and inject functions."""

from . import induction as _induction  # noqa: F401  (registers FLIPS / INJECTS for the built-in rules)
from .doses import Kill, Rescue
from .gate import GateError, check_disjoint
from .registry import FLIPS, INJECTS, InterventionError

__all__ = ["FLIPS", "INJECTS", "GateError", "InterventionError", "Kill", "Rescue", "check_disjoint"]
