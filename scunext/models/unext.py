"""UNeXt: MLP-based Rapid Medical Image Segmentation Network.

Paper:
    J. M. J. Valanarasu and V. M. Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
    MICCAI 2022, arXiv:2203.04967.

    @inproceedings{valanarasu2022unext,
      title={UNeXt: MLP-based Rapid Medical Image Segmentation Network},
      author={Valanarasu, Jeya Maria Jose and Patel, Vishal M},
      booktitle={MICCAI}, year={2022}}

Reference code: jeya-maria-jose/UNeXt-pytorch (MIT licence), read for facts only; this file is written anew.

Architecture (widths for the base / S variants):
    encoder: 3 conv stages ``Conv3x3 -> BN -> MaxPool2 -> ReLU`` (16/32/128, S: 8/16/32), then 2 tokenized-MLP
    stages ``OverlapPatchEmbed (conv3x3 s2 + LN) -> ShiftedBlock -> LN`` (160/256, S: 64/128).
    decoder: 5 stages ``Conv3x3 -> BN -> bilinear x2 -> ReLU`` with the encoder skip *added*; a ShiftedBlock + LN
    follows the two deepest fusions; the last stage has no BN; a 1x1 head gives the logits.
    Input H, W must be divisible by 32.

Parameter-exact with the official ``UNext`` / ``UNext_S`` (1,471,921 / 253,561 parameters for 3 input channels and
1 class; 0.562 / 0.099 GMACs at 1x3x256x256 by ``torch.utils.flop_counter`` / 2).

Deviations from the official code, none of which changes the parameter count or the function:
    * ``in_channels`` is honoured (the official code hard-codes 3 input channels);
    * one class and a width config instead of two copied classes; no unused arguments;
    * the token shift is done by slice + zero pad instead of pad -> roll -> crop (identical values);
    * ``mlp_ratio != 1`` works (the official shift MLP breaks for it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models._registry import register_model
from scunext.models.base import SegmentationModel, check_number, check_widths
from scunext.models.layers import OverlapPatchEmbed, ShiftedBlock, init_weights, upsample2x

__all__ = ["UNeXt", "UNEXT_VARIANTS", "MAX_BLOCKS_PER_STAGE"]

#: the most ShiftedBlocks a tokenized stage may hold (official: 1); a typo such as 1e8 blocks would otherwise be
#: built module by module until the machine runs out of memory, with no allocation error to stop it
MAX_BLOCKS_PER_STAGE = 64


class ConvStage(nn.Module):
    """UNeXt encoder stage: Conv3x3 -> BN -> MaxPool2 -> ReLU (the official order)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.max_pool2d(self.bn(self.conv(x)), 2))


class TokenStage(nn.Module):
    """Tokenized MLP stage: OverlapPatchEmbed (x1/2) -> ``depth`` ShiftedBlocks -> LayerNorm, back to a map."""

    def __init__(
        self, in_channels: int, dim: int, depth: int, mlp_ratio: float, shift_size: int, drop: float, dpr: list[float]
    ) -> None:
        super().__init__()
        self.embed = OverlapPatchEmbed(in_channels, dim)
        self.blocks = nn.ModuleList(ShiftedBlock(dim, mlp_ratio, shift_size, drop, dpr[i]) for i in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        t, h, w = self.embed(x)
        for blk in self.blocks:
            t = blk(t, h, w)
        return self.norm(t).transpose(1, 2).reshape(b, -1, h, w)


class TokenMixer(nn.Module):
    """Decoder-side ShiftedBlocks + LayerNorm applied to a feature map (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, depth: int, mlp_ratio: float, shift_size: int, drop: float, dpr: list[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ShiftedBlock(dim, mlp_ratio, shift_size, drop, dpr[i]) for i in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t, h, w)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)


class UpStage(nn.Module):
    """UNeXt decoder step: Conv3x3 -> (BN) -> bilinear x2 -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(upsample2x(self.bn(self.conv(x))))


class UNeXt(SegmentationModel):
    """UNeXt and UNeXt-S (one class, widths from a config).

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        conv_widths: widths of the 3 convolutional encoder stages (base 16/32/128, S 8/16/32).
        token_widths: widths of the 2 tokenized-MLP stages (base 160/256, S 64/128).
        depths: ShiftedBlocks per tokenized stage, encoder and decoder alike (official: 1, 1).
        mlp_ratio: hidden width of the shifted MLP relative to its input (official: 1).
        shift_size: channel groups of the token shift (official: 5).
        drop_rate: dropout inside the shifted MLPs.
        drop_path_rate: maximum stochastic depth, linearly increasing over the encoder blocks (decoder mirrors).

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; H and W divisible by 32.
    """

    input_divisor = 32

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        conv_widths: Sequence[int] = (16, 32, 128),
        token_widths: Sequence[int] = (160, 256),
        depths: Sequence[int] = (1, 1),
        mlp_ratio: float = 1.0,
        shift_size: int = 5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(in_channels, num_classes)
        c1, c2, c3 = check_widths("conv_widths", conv_widths, 3)
        t1, t2 = check_widths("token_widths", token_widths, 2)
        d1, d2 = check_widths("depths", depths, 2, most=MAX_BLOCKS_PER_STAGE)
        check_number("mlp_ratio", mlp_ratio, 0.0, math.inf, low_open=True)
        check_number("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        check_number("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
        self.init_args.update(
            conv_widths=[c1, c2, c3], token_widths=[t1, t2], depths=[d1, d2], mlp_ratio=mlp_ratio,
            shift_size=shift_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
        )  # fmt: skip
        dpr = torch.linspace(0, drop_path_rate, d1 + d2).tolist()
        tok = dict(mlp_ratio=mlp_ratio, shift_size=shift_size, drop=drop_rate)

        # encoder: skips at 1/2, 1/4, 1/8 (conv) and 1/16 (token); bottleneck at 1/32
        self.conv_stages = nn.ModuleList(
            [ConvStage(in_channels, c1), ConvStage(c1, c2), ConvStage(c2, c3)]
        )
        self.token_stages = nn.ModuleList(
            [TokenStage(c3, t1, d1, dpr=dpr[:d1], **tok), TokenStage(t1, t2, d2, dpr=dpr[d1:], **tok)]
        )
        # decoder: level j fuses with skip (1/16, 1/8, 1/4, 1/2)[j]
        self.skip_channels = (t1, c3, c2, c1)
        self.up_stages = nn.ModuleList([UpStage(t2, t1), UpStage(t1, c3), UpStage(c3, c2), UpStage(c2, c1)])
        self.token_mixers = nn.ModuleList(
            [TokenMixer(t1, d1, dpr=dpr[:d1][::-1], **tok), TokenMixer(c3, d2, dpr=dpr[d1:][::-1], **tok)]
        )
        self._build_head(c1)
        self.apply(init_weights)

    # --- pieces a subclass may replace -------------------------------------------------------------------------
    def _build_head(self, width: int) -> None:
        """UNeXt's last stage: Conv3x3 (no BN) -> bilinear x2 -> ReLU at 1/2 resolution, then a 1x1 head."""
        self.final_up = UpStage(width, width, norm=False)
        self.head = nn.Conv2d(width, self.num_classes, 1)

    def fuse(self, level: int, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Skip fusion at decoder level ``level`` (0 = deepest, 1/16). UNeXt adds."""
        return up + skip

    def decode_head(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the decoder features ``levels`` (1/16, 1/8, 1/4, 1/2 resolution)."""
        return self.head(self.final_up(levels[-1]))

    # --- forward ----------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Bottleneck (1/32) and the skips, deepest first (1/16, 1/8, 1/4, 1/2)."""
        skips = []
        for stage in self.conv_stages:
            x = stage(x)
            skips.append(x)
        x = self.token_stages[0](x)
        skips.append(x)
        return self.token_stages[1](x), skips[::-1]

    def decode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder features after each fusion (and token mixer), at 1/16, 1/8, 1/4, 1/2 resolution."""
        levels = []
        for j, (up_stage, skip) in enumerate(zip(self.up_stages, skips)):
            x = self.fuse(j, up_stage(x), skip)
            if j < len(self.token_mixers):
                x = self.token_mixers[j](x)
            levels.append(x)
        return levels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        bottleneck, skips = self.encode(x)
        return self.decode_head(self.decode(bottleneck, skips))


#: Official widths (jeya-maria-jose/UNeXt-pytorch ``UNext`` and ``UNext_S``).
UNEXT_VARIANTS = {
    "unext": dict(conv_widths=(16, 32, 128), token_widths=(160, 256)),
    "unext_s": dict(conv_widths=(8, 16, 32), token_widths=(64, 128)),
}

register_model("unext", UNeXt, "UNeXt (Valanarasu & Patel 2022), official base widths", **UNEXT_VARIANTS["unext"])
register_model(
    "unext_s", UNeXt, "UNeXt-S, official small widths (the paper's 'UNeXt' row)", **UNEXT_VARIANTS["unext_s"]
)
