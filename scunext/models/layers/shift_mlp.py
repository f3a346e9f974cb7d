"""UNeXt's tokenized MLP: overlapping patch embedding and the shifted MLP block.

Valanarasu & Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network", MICCAI 2022, arXiv:2203.04967.
Behaviour follows the official code (jeya-maria-jose/UNeXt-pytorch, MIT): channels are split into ``shift_size``
chunks with ``torch.chunk`` semantics and chunk ``i`` is shifted by ``i - shift_size // 2`` pixels with zero fill
(the official pad -> roll -> crop). Here the shift is done by slicing and padding, which gives identical values
without the padded copy, and the hidden width really follows ``mlp_ratio`` (the official code breaks for != 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models.base import check_number, check_positive_int
from scunext.models.layers.drop import DropPath

__all__ = ["shift_channels", "ShiftedMLP", "ShiftedBlock", "OverlapPatchEmbed"]


def _shift(x: torch.Tensor, offset: int, dim: int) -> torch.Tensor:
    """Shift ``x`` (B, C, H, W) by ``offset`` along ``dim`` (2 or 3), filling with zeros."""
    if offset == 0:
        return x
    n = x.shape[dim]
    k = min(abs(offset), n)
    if offset > 0:
        kept = x.narrow(dim, 0, n - k)
        pad = (0, 0, k, 0) if dim == 2 else (k, 0, 0, 0)
    else:
        kept = x.narrow(dim, k, n - k)
        pad = (0, 0, 0, k) if dim == 2 else (0, k, 0, 0)
    return F.pad(kept, pad)


def shift_channels(x: torch.Tensor, shift_size: int, dim: int) -> torch.Tensor:
    """Split channels of ``x`` (B, C, H, W) into ``shift_size`` chunks; shift chunk i by ``i - shift_size // 2``."""
    half = shift_size // 2
    chunks = torch.chunk(x, shift_size, dim=1)
    return torch.cat([_shift(c, i - half, dim) for i, c in enumerate(chunks)], dim=1)


class ShiftedMLP(nn.Module):
    """Shift along H -> Linear -> depthwise 3x3 conv -> GELU -> shift along W -> Linear, on tokens (B, N, C).

    Args:
        dim: token width.
        hidden_dim: width of the hidden layer (UNeXt uses ``dim``).
        shift_size: number of channel groups shifted by -shift_size//2..shift_size//2 pixels (odd, >= 1).
        drop: dropout after the activation and at the output.
    """

    def __init__(self, dim: int, hidden_dim: int, shift_size: int = 5, drop: float = 0.0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden_dim", hidden_dim)
        if check_positive_int("shift_size", shift_size) % 2 == 0:
            raise ValueError(f"shift_size must be odd, got {shift_size}")
        self.shift_size = shift_size
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    @staticmethod
    def _to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = shift_channels(self._to_map(x, h, w), self.shift_size, dim=2).flatten(2).transpose(1, 2)
        x = self.fc1(x)
        x = self.drop(self.act(self.dwconv(self._to_map(x, h, w))))
        x = shift_channels(x, self.shift_size, dim=3).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(x))


class ShiftedBlock(nn.Module):
    """Pre-norm residual block ``x + DropPath(ShiftedMLP(LayerNorm(x)))`` on tokens (B, N, C).

    Args:
        dim: token width.
        mlp_ratio: hidden width = ``int(dim * mlp_ratio)``.
        shift_size: see :class:`ShiftedMLP`.
        drop: dropout inside the MLP.
        drop_path: stochastic depth probability of the residual branch.
    """

    def __init__(
        self, dim: int, mlp_ratio: float = 1.0, shift_size: int = 5, drop: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        check_number("mlp_ratio", mlp_ratio, 0.0, math.inf, low_open=True)
        self.norm = nn.LayerNorm(dim)
        self.mlp = ShiftedMLP(dim, max(1, int(dim * mlp_ratio)), shift_size=shift_size, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm(x), h, w))


class OverlapPatchEmbed(nn.Module):
    """Conv3x3 stride 2 (padding 1) -> tokens (B, H/2*W/2, C) -> LayerNorm. Returns tokens and the new H, W."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w
