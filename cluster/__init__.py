"""ungrok.cluster: composes runner, interventions and mech; hosts the CLI (no logic there).

Importing it registers the interventions' doses (``kill``, ``rescue``) in ``runner.grid.DOSES``,
so every grid spec and run config read through this layer may name them."""

import interventions as _interventions  # noqa: F401
