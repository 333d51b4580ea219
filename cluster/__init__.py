"""ungrok.cluster: composes runner, interventions and mech; hosts the CLI (no logic there)."""
