"""ResUNet++: residual U-Net with squeeze-and-excitation, ASPP and attention gates (baseline).

Paper:
    D. Jha, P. H. Smedsrud, M. A. Riegler, D. Johansen, T. de Lange, P. Halvorsen and H. D. Johansen,
    "ResUNet++: An Advanced Architecture for Medical Image Segmentation", IEEE ISM 2019, pp. 225-230,
    arXiv:1911.07067.

    @inproceedings{jha2019resunetplusplus,
      title={ResUNet++: An Advanced Architecture for Medical Image Segmentation},
      author={Jha, Debesh and Smedsrud, Pia H and Riegler, Michael A and Johansen, Dag and de Lange, Thomas and
              Halvorsen, P{\\aa}l and Johansen, H{\\aa}vard D},
      booktitle={IEEE International Symposium on Multimedia (ISM)}, pages={225--230}, year={2019}}

Reference code: DebeshJha/ResUNetPlusPlus (the authors' Keras code) and the PyTorch port rishikksh20/ResUnet
(``core/res_unet_plus.py``), read for facts only; this file is written anew from the shared blocks in
:mod:`scunext.models.layers`.

Architecture (filters ``f0..f4``, default 16, 32, 64, 128, 256 as in the paper):
    stem: ``Conv3x3 -> BN -> ReLU -> Conv3x3`` plus a ``Conv3x3`` shortcut, then squeeze-and-excitation (f0, full
    resolution); encoder: three pre-activation residual blocks with stride 2, each followed by squeeze-and-excitation
    (f1 at 1/2, f2 at 1/4, f3 at 1/8); bridge: ASPP (f4 at 1/8); decoder: three steps of
    ``attention gate (skip, x) -> bilinear x2 -> concat [x, skip] -> residual block`` (f3 at 1/4, f2 at 1/2, f1 at
    full resolution); output: ASPP (f0) and a 1x1 convolution to the logits (no sigmoid). The skips are the
    squeeze-and-excited encoder outputs. Input H, W must be divisible by 8.

With the default filters: 3,631,140 parameters and 17.68 GMACs at 1x3x256x256 (``torch.utils.flop_counter`` / 2), for
3 input channels and 1 class. The rishikksh20 port built with these filters has 3,626,404 parameters and the same
17.68 GMACs (the differences are the squeeze-and-excitation blocks and two biases, see below). The often-quoted
~4.06M parameters / ~15.8 GMACs are those of the authors' PyTorch code (DebeshJha/ResUNetPlusPlus
``resunet++_pytorch.py``: 4,062,993 parameters and 15.67 GMACs by the counter above), which follows their Keras
blocks: its attention gates' full-width 3x3 gate convolutions add ~0.77M parameters, its 1x1 shortcuts and
summed (not concatenated) ASPP branches cost fewer MACs.

Choices where the paper, the authors' code and the PyTorch port differ (the blocks follow the port):
    * ASPP: dilated ``Conv3x3 -> ReLU -> BN`` branches at rates 6, 12, 18, *concatenated* and fused by a 1x1
      convolution, as in the port (the authors' code *sums* BN'd branches at rates 1, 6, 12, 18);
    * attention gate: a single-channel map from a 1x1 convolution, not sigmoid-squashed, multiplies the decoder
      feature, as in the port (the authors' code: a 3x3 convolution to all channels);
    * residual shortcuts are ``Conv3x3 -> BN``, as in the port (the authors' code: ``Conv1x1 -> BN``); the stem
      shortcut is a bias-free ``Conv3x3`` without BN (port: with bias; authors: ``Conv1x1 -> BN``) and the stem's
      first convolution is bias-free since BN follows it; the dropped biases were redundant;
    * upsampling is bilinear (``align_corners=False``), as in the paper's text and the port (the authors' code:
      nearest neighbour);
    * squeeze-and-excitation (reduction 8, as in the authors' code; port: 16) follows the stem and each of the three
      encoder blocks and its outputs are the skips, as in the paper's text and the authors' code (the port gates the
      *inputs* of the encoder blocks and takes the skips before the gate, so its deepest block has none); the
      decoder has none, as in the paper and the port (the authors' code reuses its SE-ended block there);
    * the head returns ``num_classes`` logits: apply the sigmoid / softmax in the loss or at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scunext.models._registry import register_model
from scunext.models.base import SegmentationModel, check_positive_int, check_widths
from scunext.models.layers import ASPP, AttentionGate, ConvBNReLU, ResidualConv, SqueezeExcite, init_weights, upsample2x

__all__ = ["StemBlock", "DecoderBlock", "ResUNetPlusPlus"]


class StemBlock(nn.Module):
    """ResUNet++ stem: ``Conv3x3 -> BN -> ReLU -> Conv3x3`` plus a ``Conv3x3`` shortcut, at full resolution.

    Args:
        in_channels: image channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBNReLU(in_channels, out_channels), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class DecoderBlock(nn.Module):
    """ResUNet++ decoder step: attention gate (skip, x) -> bilinear x2 -> concat ``[x, skip]`` -> residual block.

    Args:
        in_channels: channels of the decoder feature ``x`` (at half the skip's resolution).
        skip_channels: channels of the encoder skip.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.attention = AttentionGate(skip_channels, in_channels)
        self.conv = ResidualConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = upsample2x(self.attention(skip, x))
        return self.conv(torch.cat([x, skip], dim=1))


class ResUNetPlusPlus(SegmentationModel):
    """ResUNet++ (Jha et al. 2019).

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        filters: widths ``(f0, f1, f2, f3, f4)``: stem, the three encoder blocks and the ASPP bridge; the decoder
            mirrors them (f3, f2, f1) and the output ASPP has f0 channels (paper: 16, 32, 64, 128, 256).
        se_reduction: channel reduction of the squeeze-and-excitation blocks (Keras code: 8).
        aspp_rates: dilation rates of the ASPP branches, used by both ASPP blocks (paper: 6, 12, 18).

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; H and W divisible by 8.
    """

    input_divisor = 8

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        filters: Sequence[int] = (16, 32, 64, 128, 256),
        se_reduction: int = 8,
        aspp_rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__(in_channels, num_classes)
        f = check_widths("filters", filters, 5)
        check_positive_int("se_reduction", se_reduction)
        if isinstance(aspp_rates, (str, bytes)) or not isinstance(aspp_rates, Sequence) or not aspp_rates:
            raise ValueError(f"aspp_rates must be a non-empty sequence of positive integers, got {aspp_rates!r}")
        rates = [check_positive_int("aspp_rates", r) for r in aspp_rates]
        self.init_args.update(filters=list(f), se_reduction=se_reduction, aspp_rates=rates)

        self.stem = nn.Sequential(StemBlock(in_channels, f[0]), SqueezeExcite(f[0], se_reduction))
        # encoder: skips at 1, 1/2 and 1/4 resolution; the last block (1/8) feeds the bridge
        self.encoder = nn.ModuleList(
            nn.Sequential(ResidualConv(f[i], f[i + 1], stride=2), SqueezeExcite(f[i + 1], se_reduction))
            for i in range(3)
        )
        self.bridge = ASPP(f[3], f[4], rates)
        self.decoder = nn.ModuleList(
            [DecoderBlock(f[4], f[2], f[3]), DecoderBlock(f[3], f[1], f[2]), DecoderBlock(f[2], f[0], f[1])]
        )
        self.out_aspp = ASPP(f[1], f[0], rates)
        self.head = nn.Conv2d(f[0], num_classes, 1)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.encoder:
            skips.append(block(skips[-1]))
        x = self.bridge(skips.pop())
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(self.out_aspp(x))


register_model("resunetpp", ResUNetPlusPlus, "ResUNet++ (Jha et al. 2019), filters 16-256, SE + ASPP + attention gates")
