"""Corpora on disk and what each training step reads: corpus building and loading, the
step-indexed data plans and streams, support counting."""
