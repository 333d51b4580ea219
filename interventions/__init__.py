"""Corpus edits: kill (the paper's flip of a targeted class's rule answers, in place), rescue (the
paper's symmetric injection in delta units), ungrok's earlier variants (``kill-contested``,
``rescue-contest``), their disjointness gate. Importing the package registers the built-in
families' flip and inject functions of the contested variants."""

from . import induction as _induction  # noqa: F401  (registers FLIPS / INJECTS for the built-in rules)
from .contested import KillContested, RescueContest
from .doses import Kill, Rescue
from .gate import GateError, check_disjoint
from .registry import FLIPS, INJECTS, InterventionError

__all__ = ["FLIPS", "INJECTS", "GateError", "InterventionError", "Kill", "KillContested", "Rescue",
           "RescueContest", "check_disjoint"]
