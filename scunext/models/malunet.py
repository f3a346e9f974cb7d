"""MALUNet: a multi-attention and light-weight UNet for skin lesion segmentation.

Paper:
    J. Ruan, S. Xiang, M. Xie, T. Liu and Y. Fu, "MALUNet: A Multi-Attention and Light-weight UNet for Skin Lesion
    Segmentation", IEEE BIBM 2022, arXiv:2211.01784.

    @inproceedings{ruan2022malunet,
      title={MALUNet: A Multi-Attention and Light-weight UNet for Skin Lesion Segmentation},
      author={Ruan, Jiacheng and Xiang, Suncheng and Xie, Mingye and Liu, Ting and Fu, Yuzhuo},
      booktitle={IEEE BIBM}, year={2022}}

Reference code: JCruan519/MALUNet ``models/malunet.py`` (no licence), read for facts only; this file is written anew.

Architecture (widths ``c0..c5``, official 8/16/24/32/48/64), shared with EGE-UNet (:class:`SixStageUNet`):
    encoder: 3 stages ``Conv3x3 -> GroupNorm(4) -> MaxPool2 -> GELU`` (c0, c1, c2), then 2 stages
    ``block -> GroupNorm(4) -> MaxPool2 -> GELU`` (c3, c4), giving the skips t1..t5 at 1/2..1/32, and a bottleneck
    ``GELU(block)`` (c5) at 1/32. MALUNet's encoder block is external attention (EA) then dilated gated attention
    (DGA), its decoder block DGA then EA.
    decoder: 5 steps ``block or Conv3x3 -> GroupNorm(4) -> (bilinear x2, align_corners) -> GELU`` (the first, at
    1/32, without upsampling), each followed by ``+ skip``; a 1x1 head at 1/2 and a bilinear x2 to full size.
    bridge (``bridge=True``): the spatial-channel attention bridge (SAB then CAB) re-weights the five skips jointly.
    Input H, W must be divisible by 32.

Parameter- and MAC-exact with the official ``MALUNet(c_list=[8,16,24,32,48,64], split_att='fc', bridge=True)``:
177,943 parameters and 82,740,224 MACs (0.0827 G) for 3 input channels, 1 class, 1x3x256x256
(``torch.utils.flop_counter`` FLOPs / 2); pinned in ``tests/test_models.py``.

Deviations from the official code, none of which changes the parameter count or the function:
    * the model returns logits (the official ``forward`` ends in a sigmoid; the losses here take logits);
    * ``in_channels`` and ``num_classes`` are honoured as in the official code; widths are checked (multiples of 4);
    * external attention's memories are 1x1 convolutions on the map instead of 1-D convolutions on the flattened
      pixels (same arithmetic, same parameter shapes up to a trailing 1);
    * the memories' initial values reproduce what the official code ends up with (see
      :meth:`~scunext.models.layers.ExternalAttention.reset_memory`) without sharing storage;
    * no ``print`` in the constructor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models._registry import register_model
from scunext.models.base import SegmentationModel, check_widths
from scunext.models.layers import DepthwiseSeparableConv, ExternalAttention, init_weights_ruan, upsample_aligned

__all__ = [
    "MALUNet",
    "MALUNET_VARIANTS",
    "SixStageUNet",
    "DilatedGatedAttention",
    "GatedAttentionUnit",
    "SpatialChannelBridge",
]

#: GroupNorm groups used throughout MALUNet and EGE-UNet
NORM_GROUPS = 4


class GatedAttentionUnit(nn.Module):
    """MALUNet's gated attention unit: ``out = GELU(DSConv3(sigmoid(DSConv3(x)) * GELU(DSConv5(x)))) + conv1x1(x)``,
    with DSConv the depthwise-separable conv (depthwise k x k -> GroupNorm -> pointwise).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of the gate branch and the output conv; the value branch uses ``kernel_size + 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.gate = DepthwiseSeparableConv(in_channels, in_channels, kernel_size, NORM_GROUPS)
        self.value = DepthwiseSeparableConv(in_channels, in_channels, kernel_size + 2, NORM_GROUPS)
        self.out = DepthwiseSeparableConv(in_channels, out_channels, kernel_size, NORM_GROUPS)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = torch.sigmoid(self.gate(x)) * F.gelu(self.value(x))
        return F.gelu(self.out(gated)) + self.shortcut(x)


class DilatedGatedAttention(nn.Module):
    """MALUNet's dilated gated attention (DGA): the channels are split into 4 quarters, each filtered by a depthwise
    3x3 conv with its own dilation (7, 5, 2, 1), concatenated, ``GroupNorm -> conv1x1 -> GELU``, then a
    :class:`GatedAttentionUnit` maps to ``out_channels``.

    Args:
        in_channels: input channels (a multiple of 4).
        out_channels: output channels.
        dilations: dilation of each quarter's depthwise conv.
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = (7, 5, 2, 1)) -> None:
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"DilatedGatedAttention needs in_channels divisible by 4, got {in_channels}")
        rates = check_widths("dilations", dilations, 4)
        q = in_channels // 4
        self.quarters = nn.ModuleList(nn.Conv2d(q, q, 3, padding=d, dilation=d, groups=q) for d in rates)
        self.norm = nn.GroupNorm(NORM_GROUPS, in_channels)
        self.mix = nn.Conv2d(in_channels, in_channels, 1)
        self.gau = GatedAttentionUnit(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.chunk(x, 4, dim=1)
        x = torch.cat([conv(p) for conv, p in zip(self.quarters, parts)], dim=1)
        return self.gau(F.gelu(self.mix(self.norm(x))))


class SpatialChannelBridge(nn.Module):
    """MALUNet's spatial-channel attention bridge over the skips ``t_1..t_n`` (any resolutions).

    Spatial attention bridge (SAB): one shared ``sigmoid(conv7x7, dilation 3)`` on ``[mean_c(t_i), max_c(t_i)]``
    gives ``s_i = SAB(t_i) * t_i``, and ``u_i = s_i + t_i``. Channel attention bridge (CAB): the global average pools
    of all ``u_i`` are concatenated, mixed along the channel axis by a shared 1-D conv (kernel 3, no bias), and one
    FC per level (``split='fc'``; ``'conv'``: a 1x1 1-D conv, same parameters) gives ``c_i = sigmoid(...)``.
    Output: ``c_i * u_i + s_i``.

    Args:
        channels: channels of each skip.
        split: ``"fc"`` (official default) or ``"conv"``, how the per-level channel weights are produced.
    """

    def __init__(self, channels: Sequence[int], split: str = "fc") -> None:
        super().__init__()
        if split not in ("fc", "conv"):
            raise ValueError(f"split_att must be 'fc' or 'conv', got {split!r}")
        self.split = split
        total = sum(channels)
        self.spatial = nn.Conv2d(2, 1, 7, padding=9, dilation=3)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        if split == "fc":
            self.heads = nn.ModuleList(nn.Linear(total, c) for c in channels)
        else:
            self.heads = nn.ModuleList(nn.Conv1d(total, c, 1) for c in channels)

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        spatial = []
        for t in skips:
            pooled = torch.cat([t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)], dim=1)
            spatial.append(torch.sigmoid(self.spatial(pooled)) * t)
        mixed = [s + t for s, t in zip(spatial, skips)]
        pooled = torch.cat([u.mean(dim=(2, 3)) for u in mixed], dim=1)  # (B, total)
        att = self.mix(pooled.unsqueeze(1))  # (B, 1, total)
        if self.split == "conv":
            att = att.transpose(1, 2)  # (B, total, 1)
        out = []
        for head, u, s in zip(self.heads, mixed, spatial):
            c = torch.sigmoid(head(att))  # fc: (B, 1, C); conv: (B, C, 1)
            out.append(c.reshape(c.shape[0], -1, 1, 1) * u + s)
        return out


class SixStageUNet(SegmentationModel):
    """The U-shaped skeleton of MALUNet and EGE-UNet (see the module docstring); subclasses give the attention blocks
    (:meth:`encoder_block`, :meth:`decoder_block`), build their extra modules and call :meth:`init_parameters`.

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        widths: ``c0..c5`` (each a multiple of 4, for the GroupNorms and the 4-way channel splits).
    """

    input_divisor = 32

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int]) -> None:
        super().__init__(in_channels, num_classes)
        w = check_widths("widths", widths, 6)
        if any(c % 4 for c in w):
            raise ValueError(f"widths must be multiples of 4 (GroupNorm(4) and 4-way channel splits), got {list(w)}")
        self.widths = w
        self.init_args.update(widths=list(w))
        self.encoder = nn.ModuleList(
            [nn.Conv2d(in_channels, w[0], 3, padding=1), nn.Conv2d(w[0], w[1], 3, padding=1),
             nn.Conv2d(w[1], w[2], 3, padding=1)]
            + [self.encoder_block(w[i], w[i + 1]) for i in (2, 3, 4)]
        )  # fmt: skip
        self.encoder_norms = nn.ModuleList(nn.GroupNorm(NORM_GROUPS, c) for c in w[:5])
        self.decoder = nn.ModuleList(
            [self.decoder_block(w[i + 1], w[i]) for i in (4, 3, 2)]
            + [nn.Conv2d(w[2], w[1], 3, padding=1), nn.Conv2d(w[1], w[0], 3, padding=1)]
        )
        self.decoder_norms = nn.ModuleList(nn.GroupNorm(NORM_GROUPS, w[i]) for i in (4, 3, 2, 1, 0))
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def encoder_block(self, in_channels: int, out_channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def decoder_block(self, in_channels: int, out_channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_parameters(self) -> None:
        """The official initialisation (:func:`~scunext.models.layers.init_weights_ruan`), then the blocks' own."""
        self.apply(init_weights_ruan)
        for m in self.modules():
            if isinstance(m, ExternalAttention):
                m.reset_memory()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The bottleneck (c5 at 1/32) and the skips t1..t5 (1/2 .. 1/32), shallow first."""
        skips = []
        for stage, norm in zip(self.encoder, self.encoder_norms):
            x = F.gelu(F.max_pool2d(norm(stage(x)), 2))
            skips.append(x)
        return F.gelu(self.encoder[5](x)), skips

    def decode_step(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Decoder step ``level`` (0 = at 1/32, no upsampling; 1..4 upsample x2), before the skip is added."""
        x = self.decoder_norms[level](self.decoder[level](x))
        return F.gelu(upsample_aligned(x) if level else x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """1x1 head at 1/2 resolution, then bilinear x2 to the input size."""
        return upsample_aligned(self.head(x))


class MALUNet(SixStageUNet):
    """MALUNet (one class; widths and switches from arguments).

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        widths: ``c0..c5`` (official 8, 16, 24, 32, 48, 64).
        split_att: ``"fc"`` (official) or ``"conv"``: how the channel attention bridge makes per-level weights.
        bridge: the spatial-channel attention bridge on the skips (off: the raw encoder skips are added).

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; H and W divisible by 32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        widths: Sequence[int] = (8, 16, 24, 32, 48, 64),
        split_att: str = "fc",
        bridge: bool = True,
    ) -> None:
        if not isinstance(bridge, bool):
            raise ValueError(f"bridge must be True or False, got {bridge!r}")
        if split_att not in ("fc", "conv"):
            raise ValueError(f"split_att must be 'fc' or 'conv', got {split_att!r}")
        super().__init__(in_channels, num_classes, widths)
        self.bridge = SpatialChannelBridge(self.widths[:5], split_att) if bridge else None
        self.init_args.update(split_att=split_att, bridge=bridge)
        self.init_parameters()

    def encoder_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(ExternalAttention(in_channels), DilatedGatedAttention(in_channels, out_channels))

    def decoder_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(DilatedGatedAttention(in_channels, out_channels), ExternalAttention(out_channels))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encode(x)
        if self.bridge is not None:
            skips = self.bridge(skips)
        for level, skip in enumerate(reversed(skips)):
            x = self.decode_step(level, x) + skip
        return self.logits(x)


#: Official configuration (JCruan519/MALUNet ``MALUNet`` defaults).
MALUNET_VARIANTS = {"malunet": dict(widths=(8, 16, 24, 32, 48, 64), split_att="fc", bridge=True)}

register_model(
    "malunet", MALUNet, "MALUNet (Ruan et al. 2022), official widths 8..64, SC attention bridge",
    **MALUNET_VARIANTS["malunet"],
)  # fmt: skip
