"""Soft Dice loss on sigmoid probabilities, per sample (the Dice half of UNeXt's ``BCEDiceLoss``)."""

from __future__ import annotations

import torch
from torch import nn

from scunext.losses._checks import check_logits_target, check_non_negative

__all__ = ["SoftDiceLoss", "soft_dice_loss"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """``1 - soft Dice`` per sample, averaged over the batch.

    For each sample ``b``, with ``p = sigmoid(logits)`` flattened over ``(C, H, W)``::

        dice_b = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)
        loss = mean_b(1 - dice_b)

    This is the formula of the official UNeXt ``BCEDiceLoss`` (channels are pooled within a sample). An empty target
    with an all-background prediction gives ``dice_b -> 1`` (loss 0) thanks to ``smooth``.

    Args:
        logits: raw scores ``(B, C, H, W)``.
        target: ``(B, C, H, W)`` with values in ``{0, 1}``.
        smooth: added to numerator and denominator (> 0 avoids 0/0 on empty samples).

    Returns:
        Scalar loss.
    """
    target = check_logits_target(logits, target)
    b = logits.shape[0]
    probs = torch.sigmoid(logits).reshape(b, -1)
    target = target.reshape(b, -1)
    inter = (probs * target).sum(dim=1)
    dice = (2.0 * inter + smooth) / (probs.sum(dim=1) + target.sum(dim=1) + smooth)
    return (1.0 - dice).mean()


class SoftDiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`.

    Args:
        smooth: additive smoothing (default 1e-5, as UNeXt).
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = check_non_negative("smooth", smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for logits and targets of shape ``(B, C, H, W)``."""
        return soft_dice_loss(logits, target, self.smooth)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}"
