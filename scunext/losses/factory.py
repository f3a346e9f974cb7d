"""Build a loss by name (for configs and the CLI)."""

from __future__ import annotations

from typing import Any

from torch import nn

from scunext.losses.compound import BCEDiceLoss, JointLoss
from scunext.losses.dice import SoftDiceLoss
from scunext.losses.edge import EdgeLoss

__all__ = ["build_loss", "list_losses"]

_LOSSES: dict[str, type[nn.Module]] = {
    "bce_dice": BCEDiceLoss,
    "dice": SoftDiceLoss,
    "edge": EdgeLoss,
    "joint": JointLoss,
}


def list_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return sorted(_LOSSES)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a loss by name.

    Args:
        name: one of ``bce_dice``, ``dice``, ``edge``, ``joint``.
        **kwargs: constructor arguments of that loss (e.g. ``edge_weight=0.5`` for ``joint``).

    Returns:
        The loss module; call it as ``loss(logits, target)``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or an unknown argument.

    Example:
        >>> build_loss("joint", edge_weight=0.5)
        JointLoss(
          edge_weight=0.5
          (bce_dice): BCEDiceLoss(bce_weight=0.5, dice_weight=1.0, smooth=1e-05)
          (edge): EdgeLoss(kernel_size=3)
        )
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(list_losses())}")
    cls = _LOSSES[key]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for loss {key!r} ({cls.__name__}): {err}") from None
