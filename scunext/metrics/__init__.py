"""Segmentation metrics: per-image confusion counts, overlap scores with a named reduction, HD95, and a meter.

Typical use::

    meter = SegmentationMeter(compute_hd95=True)
    for images, masks, names in loader:
        meter.update(model(images), masks, ids=names)
    summary = meter.compute()  # summary["dice"]["per_image_mean"], summary["dice"]["pooled"], ...

Definitions, reductions and the empty-mask policy are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from scunext.metrics.confusion import ConfusionCounts, as_binary_masks, confusion_counts
from scunext.metrics.distance import hd95, percentile_hausdorff, surface_distances
from scunext.metrics.meter import OUTPUT_TYPES, SegmentationMeter
from scunext.metrics.overlap import (
    EMPTY_POLICIES,
    METRIC_NAMES,
    REDUCTIONS,
    dice_score,
    iou_score,
    nanmean_images,
    overlap_scores,
    precision_score,
    recall_score,
    specificity_score,
)
from scunext.metrics.paired import PairedResult, paired_comparison

__all__ = [
    "ConfusionCounts",
    "EMPTY_POLICIES",
    "METRIC_NAMES",
    "OUTPUT_TYPES",
    "PairedResult",
    "REDUCTIONS",
    "SegmentationMeter",
    "as_binary_masks",
    "confusion_counts",
    "dice_score",
    "hd95",
    "iou_score",
    "nanmean_images",
    "overlap_scores",
    "paired_comparison",
    "percentile_hausdorff",
    "precision_score",
    "recall_score",
    "specificity_score",
    "surface_distances",
]
