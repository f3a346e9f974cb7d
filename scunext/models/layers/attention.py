"""Attention blocks: CBAM (SC-UNeXt), squeeze-and-excitation, the ResUNet++ attention gate and external attention
(MALUNet)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models.base import check_positive_int

__all__ = ["ChannelAttention", "SpatialAttention", "CBAM", "SqueezeExcite", "AttentionGate", "ExternalAttention"]


class ChannelAttention(nn.Module):
    """CBAM channel gate: ``sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))``, a shared two-layer MLP.

    Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018. The MLP is bias-free 1x1 convolutions
    (hidden width ``max(1, channels // reduction)``); the biases of the two branches would only add a constant.

    Args:
        channels: input channels.
        reduction: channel reduction ratio of the hidden layer.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM spatial gate: ``sigmoid(conv7x7([mean_c(F), max_c(F)]))``.

    Args:
        kernel_size: odd kernel size of the convolution (7 in CBAM).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if check_positive_int("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        # a 2 -> 1 channel conv is 3-4x faster (forward + backward) on CPU in channels_last; same values
        gate = self.conv(pooled.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(gate).contiguous()


class CBAM(nn.Module):
    """``F' = Mc(F) * F``, ``F'' = Ms(F') * F'`` (paper eq. 1). Output shape equals input shape.

    Args:
        channels: input channels.
        reduction: channel reduction ratio of the channel-attention MLP.
        kernel_size: spatial-attention kernel size.
    """

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(x) * x
        return self.spatial(x) * x


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global average pool -> FC -> ReLU -> FC -> sigmoid gate.

    Args:
        channels: input channels.
        reduction: hidden width is ``max(1, channels // reduction)``.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


class AttentionGate(nn.Module):
    """ResUNet++ attention block: the encoder feature (2x resolution) and the decoder feature are each
    BN -> ReLU -> conv3x3'd to ``channels`` (the encoder one then max-pooled to the decoder's size), added,
    BN -> ReLU -> conv1x1 to one map, and that map multiplies the decoder feature.

    Jha et al., "ResUNet++: An Advanced Architecture for Medical Image Segmentation", ISM 2019.

    Args:
        encoder_channels: channels of the skip feature (at twice the decoder resolution).
        decoder_channels: channels of the decoder feature (the one that is gated and returned).
    """

    def __init__(self, encoder_channels: int, decoder_channels: int) -> None:
        super().__init__()
        c = decoder_channels
        self.encoder = nn.Sequential(
            nn.BatchNorm2d(encoder_channels), nn.ReLU(inplace=True),
            nn.Conv2d(encoder_channels, c, 3, padding=1), nn.MaxPool2d(2),
        )  # fmt: skip
        self.decoder = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1))
        self.gate = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, 1, 1))

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.encoder(skip) + self.decoder(x)) * x


class ExternalAttention(nn.Module):
    """External attention with a residual (MALUNet's ``EAblock``).

    Guo et al., "Beyond Self-attention: External Attention using Two Linear Layers for Visual Tasks", TPAMI 2022;
    as used in Ruan et al., "MALUNet", BIBM 2022. With ``F = conv1x1(x)`` flattened to ``(B, C, N)`` pixels, two
    learned memories ``M_k`` (``memory`` x C) and ``M_v`` (C x ``memory``), both bias-free:
    ``A = softmax_N(M_k F)``, ``A <- A / (1e-9 + sum_memory A)`` (double normalisation),
    ``out = GELU(GroupNorm(conv1x1(M_v A)) + x)``. The memories are 1x1 convolutions on the map, which is the same
    arithmetic as the official 1-D convolutions on the flattened pixels.

    Args:
        channels: input and output channels.
        memory: number of memory units (MALUNet: ``4 * channels``; default when None).
        norm_groups: groups of the GroupNorm.
    """

    def __init__(self, channels: int, memory: int | None = None, norm_groups: int = 4) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        memory = 4 * channels if memory is None else check_positive_int("memory", memory)
        if channels % norm_groups:
            raise ValueError(f"channels ({channels}) must be divisible by norm_groups ({norm_groups})")
        self.proj = nn.Conv2d(channels, channels, 1)
        self.keys = nn.Conv2d(channels, memory, 1, bias=False)
        self.values = nn.Conv2d(memory, channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(norm_groups, channels)

    def reset_memory(self) -> None:
        """MALUNet's effective initialisation: ``M_v ~ N(0, 2 / channels)`` and ``M_k = M_v^T`` (the official code
        makes ``M_k`` a transposed view of ``M_v``'s storage before the model-level init, so both end up holding the
        last-drawn values; moving the model to a device unties them, and they train independently)."""
        with torch.no_grad():
            self.values.weight.normal_(0.0, math.sqrt(2.0 / self.values.out_channels))
            self.keys.weight.copy_(self.values.weight.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        attn = self.keys(self.proj(x)).flatten(2)  # (B, memory, N)
        attn = F.softmax(attn, dim=-1)
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        y = self.values(attn.reshape(b, -1, h, w))
        return F.gelu(self.norm(self.out(y)) + x)
