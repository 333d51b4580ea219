"""ungrok.runner: the base layer (corpus -> train -> score -> store -> summary).

Imports none of ``mech``, ``interventions`` or ``cluster``.
"""

__version__ = "0.1.0"
