"""Overlap scores (Dice, IoU, precision, recall, specificity) from confusion counts, with a named reduction.

Reductions:

* ``"per_image"``: score every image, then average over images (NaN scores excluded). This is the paper's
  convention ("mean Dice over the test images") and the one that does not depend on batch size.
* ``"pooled"``: sum tp/fp/fn/tn over all images first, then compute one score (a.k.a. "micro").
* ``"none"``: the per-image scores themselves, shape ``(B, C)``.

Empty-mask policy (``empty``): a score whose denominator is 0 is undefined. With ``empty="one"`` (default) it is
1 when the prediction equals the target on that image (e.g. Dice when both masks are empty: a correct "nothing
there") and 0 otherwise (e.g. recall when the target is empty but the prediction is not). With ``empty="nan"`` it is
NaN and left out of the per-image mean (nnU-Net's convention). A score whose denominator is non-zero is never
affected, so "exactly one mask empty" gives Dice = IoU = 0 under both policies. See ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from scunext.metrics.confusion import ConfusionCounts

__all__ = [
    "METRIC_NAMES",
    "REDUCTIONS",
    "EMPTY_POLICIES",
    "dice_score",
    "iou_score",
    "precision_score",
    "recall_score",
    "specificity_score",
    "overlap_scores",
    "nanmean_images",
]

Reduction = Literal["per_image", "pooled", "none"]
EmptyPolicy = Literal["one", "nan"]

REDUCTIONS: tuple[str, ...] = ("per_image", "pooled", "none")
EMPTY_POLICIES: tuple[str, ...] = ("one", "nan")
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "precision", "recall", "specificity")


def _check_policy(reduction: str, empty: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"unknown empty policy {empty!r}; valid: {', '.join(EMPTY_POLICIES)}")


def _ratio(num: torch.Tensor, den: torch.Tensor, c: ConfusionCounts, empty: str) -> torch.Tensor:
    """``num / den`` in float64, with the empty policy where ``den == 0``."""
    num = num.to(torch.float64)
    den = den.to(torch.float64)
    undefined = den == 0
    if empty == "one":
        exact = (c.fp == 0) & (c.fn == 0)
        fill = torch.where(exact, 1.0, 0.0).to(torch.float64)
    else:
        fill = torch.full_like(num, float("nan"))
    return torch.where(undefined, fill, num / torch.where(undefined, torch.ones_like(den), den))


def _dice(c: ConfusionCounts, empty: str) -> torch.Tensor:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, c, empty)


def _iou(c: ConfusionCounts, empty: str) -> torch.Tensor:
    return _ratio(c.tp, c.tp + c.fp + c.fn, c, empty)


def _precision(c: ConfusionCounts, empty: str) -> torch.Tensor:
    return _ratio(c.tp, c.tp + c.fp, c, empty)


def _recall(c: ConfusionCounts, empty: str) -> torch.Tensor:
    return _ratio(c.tp, c.tp + c.fn, c, empty)


def _specificity(c: ConfusionCounts, empty: str) -> torch.Tensor:
    return _ratio(c.tn, c.tn + c.fp, c, empty)


_SCORES: dict[str, Callable[[ConfusionCounts, str], torch.Tensor]] = {
    "dice": _dice,
    "iou": _iou,
    "precision": _precision,
    "recall": _recall,
    "specificity": _specificity,
}


def nanmean_images(scores: torch.Tensor) -> torch.Tensor:
    """Mean over the image axis (dim 0) ignoring NaNs; NaN for a class with no defined score."""
    valid = ~torch.isnan(scores)
    total = torch.where(valid, scores, torch.zeros_like(scores)).sum(dim=0)
    n = valid.sum(dim=0)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))


def _reduce(name: str, counts: ConfusionCounts, reduction: str, empty: str) -> torch.Tensor:
    _check_policy(reduction, empty)
    if not isinstance(counts, ConfusionCounts):
        raise TypeError(f"counts must be ConfusionCounts (see confusion_counts), got {type(counts).__name__}")
    if counts.num_images == 0:
        raise ValueError("no images: counts have B == 0")
    fn = _SCORES[name]
    if reduction == "pooled":
        return fn(counts.pooled(), empty)[0]
    scores = fn(counts, empty)
    return scores if reduction == "none" else nanmean_images(scores)


def dice_score(counts: ConfusionCounts, reduction: Reduction = "per_image", empty: EmptyPolicy = "one") -> torch.Tensor:
    """Dice = 2TP / (2TP + FP + FN).

    Args:
        counts: per-image counts from :func:`~scunext.metrics.confusion.confusion_counts`.
        reduction: ``"per_image"`` (mean over images of per-image scores), ``"pooled"`` (one score from counts
            summed over images) or ``"none"`` (per-image scores).
        empty: ``"one"`` or ``"nan"``: value of an undefined score (both masks empty), see the module docstring.

    Returns:
        float64 tensor of shape ``(C,)`` (``(B, C)`` for ``"none"``).
    """
    return _reduce("dice", counts, reduction, empty)


def iou_score(counts: ConfusionCounts, reduction: Reduction = "per_image", empty: EmptyPolicy = "one") -> torch.Tensor:
    """IoU (Jaccard) = TP / (TP + FP + FN). Arguments and return value as :func:`dice_score`."""
    return _reduce("iou", counts, reduction, empty)


def precision_score(
    counts: ConfusionCounts, reduction: Reduction = "per_image", empty: EmptyPolicy = "one"
) -> torch.Tensor:
    """Precision = TP / (TP + FP); undefined when nothing is predicted. Arguments as :func:`dice_score`."""
    return _reduce("precision", counts, reduction, empty)


def recall_score(
    counts: ConfusionCounts, reduction: Reduction = "per_image", empty: EmptyPolicy = "one"
) -> torch.Tensor:
    """Recall (sensitivity) = TP / (TP + FN); undefined when the target is empty. Arguments as :func:`dice_score`."""
    return _reduce("recall", counts, reduction, empty)


def specificity_score(
    counts: ConfusionCounts, reduction: Reduction = "per_image", empty: EmptyPolicy = "one"
) -> torch.Tensor:
    """Specificity = TN / (TN + FP); undefined when the target fills the image. Arguments as :func:`dice_score`."""
    return _reduce("specificity", counts, reduction, empty)


def overlap_scores(
    counts: ConfusionCounts, reduction: Reduction = "per_image", empty: EmptyPolicy = "one"
) -> dict[str, torch.Tensor]:
    """All of :data:`METRIC_NAMES` at once: ``{"dice": ..., "iou": ..., ...}`` with the same reduction and policy."""
    return {name: _reduce(name, counts, reduction, empty) for name in METRIC_NAMES}
