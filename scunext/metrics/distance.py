"""95th-percentile Hausdorff distance (HD95) between binary masks, per image and class.

Definition (MONAI's ``HausdorffDistanceMetric(percentile=95)``, default Euclidean distance, no sub-pixel edges):

1. Surface pixels of a mask ``M``: ``M XOR erode(M)`` with a 4-connected (cross) structuring element; pixels outside
   the image count as background, so a mask touching the image border has surface pixels there.
2. Directed distances: for every surface pixel of the prediction, the Euclidean distance to the nearest surface
   pixel of the target (exact, from ``scipy.ndimage.distance_transform_edt``), and vice versa.
3. HD95 = max(P95(pred -> target), P95(target -> pred)), with ``P95`` the 95th percentile by linear interpolation
   (``numpy.percentile`` default, same as ``torch.quantile``).

Units are pixels unless ``spacing`` is given (then the units of ``spacing``, e.g. mm).

Empty masks: both empty -> 0 (nothing to miss; MONAI 1.6 gives NaN there); exactly one empty -> undefined, NaN by
default (left out of means and counted separately by :class:`~scunext.metrics.meter.SegmentationMeter`), or, with
``one_empty="max"``, the image diagonal ``sqrt(((H-1) sy)^2 + ((W-1) sx)^2)``, the largest distance possible inside
the image.

Note: medpy's ``hd95`` takes one 95th percentile of the two directed distance sets pooled together, which can be
slightly smaller than the definition here; both give the same value with ``percentile=100`` (the Hausdorff distance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from scunext.metrics.confusion import MaskLike, as_binary_masks

__all__ = ["hd95", "percentile_hausdorff", "surface_distances"]

OneEmpty = Literal["nan", "max"]
Spacing = float | Sequence[float] | None


def _spacing_pair(spacing: Spacing) -> tuple[float, float]:
    if spacing is None:
        return 1.0, 1.0
    if isinstance(spacing, int | float):
        sy = sx = float(spacing)
    else:
        values = tuple(float(s) for s in spacing)
        if len(values) != 2:
            raise ValueError(f"spacing must be a number or a pair (row, column), got {spacing!r}")
        sy, sx = values
    if not (sy > 0 and sx > 0):
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    return sy, sx


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing: Spacing = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances between two non-empty 2-D binary masks.

    Args:
        pred: 2-D bool array.
        target: 2-D bool array of the same shape.
        spacing: pixel size, a number or ``(row, column)``; ``None`` means 1 (distances in pixels).

    Returns:
        ``(d_pred_to_target, d_target_to_pred)``: for each surface pixel of one mask, the distance to the nearest
        surface pixel of the other (float64 1-D arrays).

    Raises:
        ValueError: if a mask is empty or the shapes differ.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"expected two 2-D masks of the same shape, got {pred.shape} and {target.shape}")
    if not pred.any() or not target.any():
        raise ValueError("surface distances are undefined when a mask is empty")
    sampling = _spacing_pair(spacing)
    # Crop to the bounding box of the union plus a 1-pixel zero margin: distances are unchanged (every surface pixel
    # lies inside the box) and the erosion sees background beyond the border, exactly as on the full image.
    rows = np.flatnonzero((pred | target).any(axis=1))
    cols = np.flatnonzero((pred | target).any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    pred = np.pad(pred[box], 1)
    target = np.pad(target[box], 1)
    e_pred, e_target = _edges(pred), _edges(target)
    dt_target = ndimage.distance_transform_edt(~e_target, sampling=sampling)
    dt_pred = ndimage.distance_transform_edt(~e_pred, sampling=sampling)
    return dt_target[e_pred].astype(np.float64), dt_pred[e_target].astype(np.float64)


def percentile_hausdorff(
    pred: np.ndarray,
    target: np.ndarray,
    percentile: float = 95.0,
    spacing: Spacing = None,
    one_empty: OneEmpty = "nan",
) -> float:
    """Percentile Hausdorff distance of one 2-D mask pair (see the module docstring for the definition).

    Args:
        pred: 2-D binary mask.
        target: 2-D binary mask of the same shape.
        percentile: in ``[0, 100]``; 95 gives HD95, 100 the classical Hausdorff distance.
        spacing: pixel size, a number or ``(row, column)``; ``None`` = pixels.
        one_empty: ``"nan"`` or ``"max"`` (image diagonal) when exactly one mask is empty.

    Returns:
        The distance (0.0 when both masks are empty).
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if one_empty not in ("nan", "max"):
        raise ValueError(f"one_empty must be 'nan' or 'max', got {one_empty!r}")
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"expected two 2-D masks of the same shape, got {pred.shape} and {target.shape}")
    has_p, has_t = bool(pred.any()), bool(target.any())
    if not has_p and not has_t:
        return 0.0
    if has_p != has_t:
        if one_empty == "nan":
            return float("nan")
        sy, sx = _spacing_pair(spacing)
        return math.hypot((pred.shape[0] - 1) * sy, (pred.shape[1] - 1) * sx)
    d_pt, d_tp = surface_distances(pred, target, spacing)
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def hd95(
    pred: MaskLike,
    target: MaskLike,
    spacing: Spacing = None,
    one_empty: OneEmpty = "nan",
    percentile: float = 95.0,
) -> torch.Tensor:
    """HD95 for every image and class of a batch.

    Args:
        pred: predicted binary masks ``(B, H, W)`` or ``(B, C, H, W)`` (tensor or numpy array).
        target: ground-truth binary masks, same shape.
        spacing: pixel size, a number or ``(row, column)``; ``None`` = pixels.
        one_empty: ``"nan"`` (default) or ``"max"`` when exactly one of the two masks is empty.
        percentile: 95 by default; 100 gives the Hausdorff distance.

    Returns:
        float64 CPU tensor of shape ``(B, C)``: 0 where both masks are empty, NaN (or the diagonal) where one is.
    """
    p = as_binary_masks(pred, "pred").cpu().numpy()
    t = as_binary_masks(target, "target").cpu().numpy()
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    out = torch.empty(p.shape[:2], dtype=torch.float64)
    for b, c in np.ndindex(*p.shape[:2]):
        out[b, c] = percentile_hausdorff(p[b, c], t[b, c], percentile, spacing, one_empty)
    return out
