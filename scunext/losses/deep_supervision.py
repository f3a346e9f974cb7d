"""Deep supervision: one loss applied to a model's main logits and, with weights, to its auxiliary logits.

EGE-UNet's official objective (JCruan519/EGE-UNet ``utils.py``, ``GT_BceDiceLoss``) is
``L(main) + 0.1 L(aux_1/32) + 0.2 L(aux_1/16) + 0.3 L(aux_1/8) + 0.4 L(aux_1/4) + 0.5 L(aux_1/2)``, each auxiliary
map upsampled to the input size first (the model does that), with ``L`` their BCE + Dice. Here ``L`` is whatever loss
the run is configured with, and the weights are those of the official code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from scunext.losses._checks import check_non_negative
from scunext.models.outputs import DeepSupervisionOutput

__all__ = ["DeepSupervisionLoss", "EGEUNET_AUX_WEIGHTS"]

#: auxiliary-loss weights of the official EGE-UNet, deepest (1/32) first
EGEUNET_AUX_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5)


class DeepSupervisionLoss(nn.Module):
    """Wrap ``loss(logits, target)`` so that it also accepts a
    :class:`~scunext.models.outputs.DeepSupervisionOutput`:
    ``loss(main, target) + sum_i aux_weights[i] * loss(aux[i], target)``.

    A plain logits tensor (every model in eval mode, models without deep supervision) gets ``loss(logits, target)``
    unchanged, so the trainer can use the wrapper for every model. All logits are cast to float32 first (mixed
    precision). After a deeply supervised call, :attr:`last_components` holds ``"main"``, ``"aux"`` (the weighted
    auxiliary sum) and ``"total"`` as floats.

    Args:
        loss: the loss for one logits tensor, e.g. from :func:`~scunext.losses.build_loss`.
        aux_weights: one weight (>= 0) per auxiliary output, in the model's order (deepest first); default the
            official EGE-UNet weights.

    Raises:
        ValueError: (on call) the model gave a different number of auxiliary outputs than there are weights.

    Example:
        >>> from scunext.losses import DeepSupervisionLoss, build_loss
        >>> loss_fn = DeepSupervisionLoss(build_loss("bce_dice"))
    """

    def __init__(
        self,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        aux_weights: Sequence[float] = EGEUNET_AUX_WEIGHTS,
    ) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable as loss(logits, target), got {type(loss).__name__}")
        self.loss = loss
        self.aux_weights = tuple(check_non_negative("aux_weights", w) for w in aux_weights)
        self.last_components: dict[str, float] = {}

    def forward(self, output: torch.Tensor | DeepSupervisionOutput, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for a logits tensor or a :class:`DeepSupervisionOutput`, and targets ``(B, C, H, W)``."""
        if not isinstance(output, DeepSupervisionOutput):
            return self.loss(output.float(), target)
        if len(output.aux) != len(self.aux_weights):
            raise ValueError(
                f"the model returned {len(output.aux)} auxiliary outputs but {len(self.aux_weights)} aux_weights are "
                f"configured ({list(self.aux_weights)})"
            )
        main = self.loss(output.main.float(), target)
        aux = main.new_zeros(())
        for w, a in zip(self.aux_weights, output.aux):
            aux = aux + w * self.loss(a.float(), target)
        total = main + aux
        self.last_components = {k: float(v.detach()) for k, v in (("main", main), ("aux", aux), ("total", total))}
        return total

    def extra_repr(self) -> str:
        return f"aux_weights={list(self.aux_weights)}"
