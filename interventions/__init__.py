"""ungrok.interventions: corpus edits, kill and rescue (imports ``runner`` only)."""
