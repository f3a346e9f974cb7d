"""Per-image, per-class confusion counts (tp, fp, fn, tn): the statistics every overlap metric is derived from.

Counts are computed image by image, so they never depend on how images are grouped into batches. Reductions
(per-image mean, pooled) are applied later, explicitly, in :mod:`scunext.metrics.overlap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["ConfusionCounts", "as_binary_masks", "confusion_counts"]

MaskLike = torch.Tensor | np.ndarray


class ConfusionCounts(NamedTuple):
    """True/false positives/negatives per image and class, each an int64 tensor of shape ``(B, C)``."""

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    tn: torch.Tensor

    @property
    def num_images(self) -> int:
        """Number of images ``B``."""
        return int(self.tp.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.tp.shape[1])

    def pooled(self) -> ConfusionCounts:
        """Counts summed over all images, shape ``(1, C)`` (the "micro" / pooled statistics)."""
        return ConfusionCounts(*(x.sum(dim=0, keepdim=True) for x in self))

    def to(self, device: torch.device | str) -> ConfusionCounts:
        """The same counts on ``device``."""
        return ConfusionCounts(*(x.to(device) for x in self))

    @staticmethod
    def cat(parts: Sequence[ConfusionCounts]) -> ConfusionCounts:
        """Concatenate counts of several batches along the image axis (order preserved)."""
        if len(parts) == 0:
            raise ValueError("cannot concatenate an empty list of ConfusionCounts")
        return ConfusionCounts(*(torch.cat([getattr(p, f) for p in parts], dim=0) for f in ConfusionCounts._fields))


def as_binary_masks(x: MaskLike, name: str = "mask") -> torch.Tensor:
    """Validate a binary mask batch and return it as a bool tensor of shape ``(B, C, H, W)``.

    Args:
        x: bool or 0/1-valued tensor or numpy array of shape ``(B, H, W)`` (one class) or ``(B, C, H, W)``
            (one binary or one-hot channel per class).
        name: argument name used in error messages.

    Returns:
        A bool tensor ``(B, C, H, W)`` on the input's device (CPU for numpy input).

    Raises:
        TypeError: if ``x`` is neither a tensor nor an array, or has a complex dtype.
        ValueError: if the rank is not 3 or 4, or a value is not 0 or 1 (threshold probabilities first).
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be bool or real-valued, got dtype {x.dtype}")
    refuse_trailing_channel(x, name)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.bool:
        return x
    x = x.detach()
    if bool(((x != 0) & (x != 1)).any()):
        raise ValueError(
            f"{name} must be binary (bool or values in {{0, 1}}); threshold probabilities or logits first "
            "(SegmentationMeter does this for model outputs)"
        )
    return x != 0


def refuse_trailing_channel(x: torch.Tensor, name: str) -> None:
    """Refuse a 3-D ``(H, W, 1)`` array (a PIL/OpenCV habit): read as ``(B, H, W)`` it was H images one pixel wide,
    scored without an error (Dice 0.97 for a true 0.90)."""
    if x.dim() == 3 and x.shape[2] == 1 and x.shape[0] > 1 and x.shape[1] > 1:
        raise ValueError(f"{name} of shape {tuple(x.shape)} looks like one (H, W, 1) image, not {x.shape[0]} images "
                         f"one pixel wide; pass (B, H, W) or (B, C, H, W), e.g. mask[None, ..., 0]")  # fmt: skip


def confusion_counts(pred: MaskLike, target: MaskLike) -> ConfusionCounts:
    """Count tp, fp, fn and tn for every image and class.

    Args:
        pred: predicted binary masks, ``(B, H, W)`` or ``(B, C, H, W)`` (bool or 0/1; tensor or numpy array).
        target: ground-truth binary masks with the same shape as ``pred`` (``(B, H, W)`` and ``(B, 1, H, W)`` may be
            mixed).

    Returns:
        :class:`ConfusionCounts` whose fields are int64 tensors of shape ``(B, C)``; ``tp + fp + fn + tn == H * W``.

    Raises:
        ValueError: on non-binary values or mismatched shapes.

    Example:
        >>> p = torch.tensor([[[1, 1, 0], [0, 0, 0]]])
        >>> t = torch.tensor([[[1, 0, 0], [1, 0, 0]]])
        >>> confusion_counts(p, t)
        ConfusionCounts(tp=tensor([[1]]), fp=tensor([[1]]), fn=tensor([[1]]), tn=tensor([[3]]))
    """
    p = as_binary_masks(pred, "pred")
    t = as_binary_masks(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if p.device != t.device:
        t = t.to(p.device)
    dims = (2, 3)
    tp = (p & t).sum(dim=dims, dtype=torch.int64)
    fp = (p & ~t).sum(dim=dims, dtype=torch.int64)
    fn = (~p & t).sum(dim=dims, dtype=torch.int64)
    tn = p.shape[2] * p.shape[3] - tp - fp - fn
    return ConfusionCounts(tp, fp, fn, tn)
