"""What a rule, a probe and a synthetic story are: vocabulary, rule families, probe batteries,
corpus presets. Depends only on the leaves (``runner.registry``)."""
