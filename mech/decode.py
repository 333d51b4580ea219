"""Cue-class decodability at the decision site, and the class-mean cue direction, per depth.

Depths: ``0`` is the residual entering block 0 (embeddings), ``k >= 1`` the residual after block
``k - 1`` (``blocks.{k-1}.hook_resid_post``), read from the capture (:mod:`mech.source`).

Decodability (the paper's classifier, no trained parameters). Each residual row is
rms-normalised (``x / sqrt(mean(x^2))``). The items carrying a cue (conflict and agree) are split
into two *frames*, the battery's template splits (``train`` and ``heldout`` use disjoint
templates in the paper's battery; disjoint cue-key combinations in the built-in world). Class
means are fitted on one frame's rows; each row of the other frame is assigned the class whose mean
is nearest (Euclidean); the score is the balanced accuracy (mean per-class recall, chance 0.5 with
two classes). Both directions are run and averaged. A frame missing a class gives NaN.

Cue direction (for :mod:`mech.direction`): the difference of the two class means of the
rms-normalised rows at a depth (first class minus second in the family's class order), unit norm.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

EPS = 1e-12


def rms_normalise(x: Float[np.ndarray, "... d_model"]) -> Float[np.ndarray, "... d_model"]:
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS)


def depth_stack(rows: dict[str, np.ndarray]) -> Float[np.ndarray, "depth item d_model"]:
    """Residual rows per depth from one checkpoint's ``resid_pre`` / ``resid_post`` ``(item, layer, d)``."""
    return np.concatenate([rows["resid_pre"][None, :, 0], np.moveaxis(rows["resid_post"], 1, 0)], 0)


def class_means(X: np.ndarray, y: np.ndarray, classes: list) -> np.ndarray | None:
    """``(class, d)`` means of ``X`` per class in ``classes`` order; None if a class has no row."""
    if any(not (y == c).any() for c in classes):
        return None
    return np.stack([X[y == c].mean(0) for c in classes])


def nearest_mean_accuracy(X_fit: np.ndarray, y_fit: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Balanced accuracy on ``X_test`` of the nearest class mean fitted on ``X_fit`` (NaN when a
    class is missing from either side)."""
    classes = sorted(set(y_fit.tolist()) | set(y_test.tolist()))
    mu = class_means(X_fit, y_fit, classes)
    if mu is None or len(classes) < 2 or any(not (y_test == c).any() for c in classes):
        return float("nan")
    d2 = ((X_test[:, None, :] - mu[None]) ** 2).sum(-1)
    pred = np.asarray(classes, dtype=object)[np.argmin(d2, 1)]
    return float(np.mean([(pred[y_test == c] == c).mean() for c in classes]))


def cross_frame_accuracy(X: np.ndarray, y: np.ndarray, frame: np.ndarray) -> float:
    """Mean of the two directions (fit on frame A test on B, and B on A); rows are rms-normalised
    here. ``frame`` must hold exactly two values."""
    fr = sorted(set(frame.tolist()))
    if len(fr) != 2:
        raise ValueError(f"cross-frame decoding needs exactly two frames, got {fr}")
    X = rms_normalise(X)
    a, b = frame == fr[0], frame == fr[1]
    return float(np.mean([nearest_mean_accuracy(X[a], y[a], X[b], y[b]),
                          nearest_mean_accuracy(X[b], y[b], X[a], y[a])]))


def decodability_series(rows, labels: np.ndarray, frames: np.ndarray) -> list[list[float]]:
    """``(step, depth)`` cross-frame accuracies for the rows of :class:`mech.source.FamilyRows`
    where ``labels`` is not empty (cue-carrying items); NaN throughout when those items do not
    fall into exactly two frames."""
    keep = labels != ""
    if len(set(frames[keep].tolist())) != 2:
        return [[float("nan")] * (1 + rows.arrays["resid_post"].shape[2]) for _ in rows.steps]
    out = []
    for step in rows.steps:
        Xd = depth_stack(rows.at(step))[:, keep]
        out.append([cross_frame_accuracy(X, labels[keep], frames[keep]) for X in Xd])
    return out


def class_direction(X: np.ndarray, y: np.ndarray, classes: list) -> np.ndarray:
    """Unit vector along mean(rms-normalised X | classes[0]) - mean(... | classes[1])."""
    mu = class_means(rms_normalise(X), y, classes[:2])
    if mu is None:
        raise ValueError(f"a cue direction needs rows of both classes {classes[:2]}")
    r = mu[0] - mu[1]
    n = np.linalg.norm(r)
    if n == 0:
        raise ValueError("the class means coincide: no direction to fit")
    return r / n
