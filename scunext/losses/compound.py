"""Compound losses: UNeXt's ``BCEDiceLoss`` and the paper's joint loss (BCE-Dice plus the edge term)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scunext.losses._checks import check_logits_target, check_non_negative
from scunext.losses.dice import soft_dice_loss
from scunext.losses.edge import EdgeLoss, edge_loss

__all__ = ["BCEDiceLoss", "JointLoss"]


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE-with-logits + dice_weight * (1 - soft Dice)``; defaults 0.5 and 1 reproduce UNeXt.

    BCE is averaged over all pixels of the batch; the Dice term is :func:`~scunext.losses.dice.soft_dice_loss`
    (per sample, smooth 1e-5). After each call, :attr:`last_components` holds the detached values of ``"bce"``,
    ``"dice"`` and ``"total"`` as floats for logging.

    Args:
        bce_weight: weight of the BCE term (>= 0).
        dice_weight: weight of the Dice term (>= 0).
        smooth: Dice smoothing.
    """

    def __init__(self, bce_weight: float = 0.5, dice_weight: float = 1.0, smooth: float = 1e-5) -> None:
        super().__init__()
        self.bce_weight = check_non_negative("bce_weight", bce_weight)
        self.dice_weight = check_non_negative("dice_weight", dice_weight)
        self.smooth = check_non_negative("smooth", smooth)
        self.last_components: dict[str, float] = {}

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted terms and the weighted total, as tensors: ``{"bce", "dice", "total"}``."""
        target = check_logits_target(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        dice = soft_dice_loss(logits, target, self.smooth)
        return {"bce": bce, "dice": dice, "total": self.bce_weight * bce + self.dice_weight * dice}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for logits and targets of shape ``(B, C, H, W)``."""
        parts = self.components(logits, target)
        self.last_components = {k: float(v.detach()) for k, v in parts.items()}
        return parts["total"]

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}, smooth={self.smooth}"


class JointLoss(nn.Module):
    """The paper's joint loss: ``BCEDiceLoss + edge_weight * EdgeLoss``.

    ``total = bce_weight * bce + dice_weight * (1 - soft Dice) + edge_weight * edge``. The default ``edge_weight``
    0.5 gives the boundary-band cross-entropy the same coefficient as the whole-image cross-entropy, so the band
    (a few percent of the pixels) contributes as much cross-entropy signal as the rest of the image: the paper's
    "increase the proportion of edge features" without letting the boundary dominate the Dice term (weight 1).
    After each call, :attr:`last_components` holds ``"bce"``, ``"dice"``, ``"bce_dice"``, ``"edge"`` and
    ``"total"`` as floats.

    Args:
        edge_weight: weight of the edge term (>= 0; 0 reduces to :class:`BCEDiceLoss`).
        kernel_size: band kernel width of :class:`~scunext.losses.edge.EdgeLoss` (odd, >= 3).
        bce_weight: weight of the BCE term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing.
    """

    def __init__(
        self,
        edge_weight: float = 0.5,
        kernel_size: int = 3,
        bce_weight: float = 0.5,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.edge_weight = check_non_negative("edge_weight", edge_weight)
        self.bce_dice = BCEDiceLoss(bce_weight, dice_weight, smooth)
        self.edge = EdgeLoss(kernel_size)
        self.last_components: dict[str, float] = {}

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """All terms as tensors: ``{"bce", "dice", "bce_dice", "edge", "total"}``."""
        parts = self.bce_dice.components(logits, target)
        edge = edge_loss(logits, target, self.edge.kernel_size)
        bce_dice = parts["total"]
        return {
            "bce": parts["bce"],
            "dice": parts["dice"],
            "bce_dice": bce_dice,
            "edge": edge,
            "total": bce_dice + self.edge_weight * edge,
        }

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for logits and targets of shape ``(B, C, H, W)``."""
        parts = self.components(logits, target)
        self.last_components = {k: float(v.detach()) for k, v in parts.items()}
        return parts["total"]

    def extra_repr(self) -> str:
        return f"edge_weight={self.edge_weight}"
