"""Building blocks shared by the architectures in :mod:`scunext.models`."""

from scunext.models.layers.attention import (
    CBAM,
    AttentionGate,
    ChannelAttention,
    ExternalAttention,
    SpatialAttention,
    SqueezeExcite,
)
from scunext.models.layers.conv import ASPP, ConvBNReLU, DepthwiseSeparableConv, ResidualConv
from scunext.models.layers.drop import DropPath
from scunext.models.layers.init import init_weights, init_weights_ruan
from scunext.models.layers.norm import LayerNorm2d
from scunext.models.layers.shift_mlp import OverlapPatchEmbed, ShiftedBlock, ShiftedMLP, shift_channels
from scunext.models.layers.upsample import bilinear_kernel, upsample2x, upsample_aligned

__all__ = [
    "ASPP",
    "CBAM",
    "AttentionGate",
    "ChannelAttention",
    "ConvBNReLU",
    "DepthwiseSeparableConv",
    "DropPath",
    "ExternalAttention",
    "LayerNorm2d",
    "OverlapPatchEmbed",
    "ResidualConv",
    "ShiftedBlock",
    "ShiftedMLP",
    "SpatialAttention",
    "SqueezeExcite",
    "bilinear_kernel",
    "init_weights",
    "init_weights_ruan",
    "shift_channels",
    "upsample2x",
    "upsample_aligned",
]
