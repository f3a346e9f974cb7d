"""Convolutional blocks: conv-BN-ReLU, the pre-activation residual unit and ASPP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvBNReLU", "ResidualConv", "ASPP"]


class ConvBNReLU(nn.Sequential):
    """Conv(k x k, 'same' padding, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualConv(nn.Module):
    """Pre-activation residual unit (He et al. 2016) as in ResUNet/ResUNet++:
    ``BN-ReLU-conv3x3(stride) -> BN-ReLU-conv3x3`` plus a ``conv3x3(stride)-BN`` shortcut.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution and of the shortcut (2 halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )  # fmt: skip
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in ResUNet++: parallel dilated conv3x3 -> ReLU -> BN branches,
    concatenated and fused by a 1x1 convolution.

    Args:
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        rates: dilation rates, one branch each.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        if not rates:
            raise ValueError("ASPP needs at least one dilation rate")
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(out_channels),
            )
            for r in rates
        )
        self.project = nn.Conv2d(len(rates) * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))
