"""Upsampling helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling with ``align_corners=False`` (as ``F.interpolate(scale_factor=2)`` in UNeXt)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def bilinear_kernel(size: int) -> torch.Tensor:
    """A ``size x size`` bilinear interpolation kernel, the classic initialisation of a transposed convolution.

    With ``kernel_size=2s, stride=s, padding=s//2`` a transposed convolution with this kernel upsamples by ``s``
    (for even ``s``) with bilinear weights.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    return filt[:, None] * filt[None, :]


def upsample_aligned(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Bilinear upsampling by ``scale`` with ``align_corners=True`` (as in MALUNet and EGE-UNet)."""
    return F.interpolate(x, scale_factor=float(scale), mode="bilinear", align_corners=True)
