"""Typed model outputs other than a plain logits tensor."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["DeepSupervisionOutput"]


class DeepSupervisionOutput(NamedTuple):
    """What a deeply supervised model returns in training mode (in eval mode it returns ``main`` alone).

    Attributes:
        main: the logits ``(B, num_classes, H, W)``, as returned in eval mode.
        aux: auxiliary logits, each of ``main``'s shape, ordered deepest (coarsest) first; the loss wrapper
            :class:`~scunext.losses.deep_supervision.DeepSupervisionLoss` weights them.
    """

    main: torch.Tensor
    aux: tuple[torch.Tensor, ...]
