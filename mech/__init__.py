"""ungrok.mech: TransformerLens capture, margins and localisation (imports ``runner`` only)."""
