"""Convolutional blocks: conv-BN-ReLU, the pre-activation residual unit, ASPP and the depthwise-separable conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvBNReLU", "ResidualConv", "ASPP", "DepthwiseSeparableConv"]


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


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k conv -> GroupNorm -> pointwise 1x1 conv, both convolutions with bias (MALUNet's
    ``DepthWiseConv2d``; Ruan et al., BIBM 2022). 'Same' padding for odd ``kernel_size``.

    Args:
        in_channels: input channels (the depthwise conv keeps them).
        out_channels: output channels of the pointwise conv.
        kernel_size: depthwise kernel size (odd).
        norm_groups: groups of the GroupNorm (``in_channels`` must be divisible by it).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm_groups: int = 4) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if in_channels % norm_groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by norm_groups ({norm_groups})")
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels)
        self.norm = nn.GroupNorm(norm_groups, in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.norm(self.depthwise(x)))
