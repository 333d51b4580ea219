"""Small statistics shared by the analyses."""

from __future__ import annotations


def spearman(x, y) -> float | None:
    """Spearman's rho of two equal-length sequences; None when undefined (fewer than 3 points, or
    either side constant)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)  # pyright: ignore[reportAttributeAccessIssue] (scipy's stubs)
