"""Segmentation losses on logits: soft Dice, UNeXt's BCE-Dice, the boundary-band edge loss, the joint loss and the
deep-supervision wrapper.

All losses take logits ``(B, C, H, W)`` and float targets in ``{0, 1}`` of the same shape and return a scalar.
Definitions and default weights are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from scunext.losses.compound import BCEDiceLoss, JointLoss
from scunext.losses.deep_supervision import DeepSupervisionLoss
from scunext.losses.dice import SoftDiceLoss, soft_dice_loss
from scunext.losses.edge import EdgeLoss, boundary_band, edge_loss
from scunext.losses.factory import build_loss, list_losses

__all__ = [
    "BCEDiceLoss",
    "DeepSupervisionLoss",
    "EdgeLoss",
    "JointLoss",
    "SoftDiceLoss",
    "boundary_band",
    "build_loss",
    "edge_loss",
    "list_losses",
    "soft_dice_loss",
]
