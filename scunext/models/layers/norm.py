"""Normalisation layers for feature maps ``(B, C, H, W)``."""

from __future__ import annotations

import torch
from torch import nn

from scunext.models.base import check_positive_int

__all__ = ["LayerNorm2d"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` map (ConvNeXt's ``channels_first`` LayerNorm):
    each pixel's ``C`` values are normalised by their mean and biased variance, then scaled and shifted per channel.

    Written with plain reductions so that it exports to ONNX opset 17 without a transpose.

    Args:
        channels: ``C``.
        eps: added to the variance (EGE-UNet uses 1e-6).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(dim=1, keepdim=True)
        x = centred / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"
