"""Building blocks shared by the architectures in :mod:`scunext.models`."""

from scunext.models.layers.attention import CBAM, AttentionGate, ChannelAttention, SpatialAttention, SqueezeExcite
from scunext.models.layers.conv import ASPP, ConvBNReLU, ResidualConv
from scunext.models.layers.drop import DropPath
from scunext.models.layers.init import init_weights
from scunext.models.layers.shift_mlp import OverlapPatchEmbed, ShiftedBlock, ShiftedMLP, shift_channels
from scunext.models.layers.upsample import bilinear_kernel, upsample2x

__all__ = [
    "ASPP",
    "CBAM",
    "AttentionGate",
    "ChannelAttention",
    "ConvBNReLU",
    "DropPath",
    "OverlapPatchEmbed",
    "ResidualConv",
    "ShiftedBlock",
    "ShiftedMLP",
    "SpatialAttention",
    "SqueezeExcite",
    "bilinear_kernel",
    "init_weights",
    "shift_channels",
    "upsample2x",
]
