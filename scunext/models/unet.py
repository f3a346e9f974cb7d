"""U-Net: Convolutional Networks for Biomedical Image Segmentation (baseline).

Paper:
    O. Ronneberger, P. Fischer and T. Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
    MICCAI 2015, LNCS 9351, pp. 234-241, arXiv:1505.04597.

    @inproceedings{ronneberger2015unet,
      title={U-Net: Convolutional Networks for Biomedical Image Segmentation},
      author={Ronneberger, Olaf and Fischer, Philipp and Brox, Thomas},
      booktitle={MICCAI}, pages={234--241}, year={2015}}

Architecture (``depth`` = 4, widths ``base_width * 2**i``):
    encoder: a double conv ``(Conv3x3 -> BN -> ReLU) x 2`` at each of ``depth + 1`` levels, with a 2x2 max pool
    between levels; decoder: per level a 2x2 stride-2 transposed convolution that halves the channels, concatenation
    with the encoder feature of the same resolution (skip first, then the upsampled map) and a double conv; a 1x1
    convolution gives the logits. Input H, W must be divisible by ``2**depth``.

The registered ``unet`` uses ``base_width=32``: widths 32, 64, 128, 256, 512, 7,763,041 parameters and 12.07 GMACs at
1x3x256x256 (``torch.utils.flop_counter`` / 2), for 3 input channels and 1 class. ``base_width=64`` gives the
paper's widths (64 ... 1024) and its ~31M parameters (31,037,633 here; 48.17 GMACs at 256x256).

Deviations from the paper:
    * padded ('same') 3x3 convolutions, so the output has the input's size and the skips need no cropping (the
      paper uses unpadded convolutions, a 572x572 input and a 388x388 output, and overlap-tile inference);
    * batch normalisation after every 3x3 convolution (bias-free convolutions), which the 2015 paper predates;
    * no dropout at the end of the contracting path;
    * ``num_classes`` logit channels, no softmax (the paper: 2 classes with a pixel-wise softmax) and no weight map
      in the loss;
    * default widths are half of the paper's (see above); ``base_width`` and ``depth`` are configurable.
    Upsampling stays the paper's learned 2x2 "up-convolution" (a transposed convolution) rather than the bilinear
    upsampling + convolution that many re-implementations substitute; it is initialised He-normal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models._registry import register_model
from scunext.models.base import SegmentationModel, check_positive_int
from scunext.models.layers import ConvBNReLU, init_weights

__all__ = ["DoubleConv", "UpBlock", "UNet"]


class DoubleConv(nn.Sequential):
    """U-Net level: ``(Conv3x3 -> BN -> ReLU) x 2`` with 'same' padding.

    Args:
        in_channels: input channels.
        out_channels: output channels of both convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class UpBlock(nn.Module):
    """U-Net decoder step: 2x2 stride-2 transposed convolution ``in -> in // 2`` channels, concatenation with the
    skip and a :class:`DoubleConv` to ``out_channels``.

    Args:
        in_channels: channels of the decoder feature (at half the skip's resolution).
        skip_channels: channels of the encoder skip.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = DoubleConv(skip_channels + in_channels // 2, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal transposed convolution: each output pixel sees exactly one tap per input channel."""
        nn.init.normal_(self.up.weight, 0.0, math.sqrt(2.0 / self.up.in_channels))
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmentationModel):
    """U-Net with padded convolutions and batch normalisation.

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        base_width: width of the first level; level ``i`` has ``base_width * 2**i`` channels (paper: 64).
        depth: number of 2x2 max-pool downsamplings (paper: 4).

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; H and W divisible by ``2**depth``.
    """

    input_divisor = 16  # 2**depth for the default depth; set per instance

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_width: int = 32, depth: int = 4) -> None:
        super().__init__(in_channels, num_classes)
        check_positive_int("base_width", base_width)
        check_positive_int("depth", depth, most=12)  # input_divisor 2**12 = 4096, the largest --size
        self.init_args.update(base_width=base_width, depth=depth)
        self.input_divisor = 2**depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.widths = tuple(widths)

        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-1], widths, strict=True)
        )
        # decoder step j upsamples widths[depth - j] and fuses with the skip widths[depth - j - 1]
        self.decoder = nn.ModuleList(UpBlock(widths[i], widths[i - 1], widths[i - 1]) for i in range(depth, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)


register_model("unet", UNet, "U-Net (Ronneberger et al. 2015), padded convs + BN, widths 32-512", base_width=32)
