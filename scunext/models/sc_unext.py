"""SC-UNeXt: UNeXt with CBAM attention, multiplicative "SC" skip connections and a pyramid fusion (PFM) head.

Paper:
    "Advanced Medical Image Segmentation with Multi-Scale Feature Fusion and Attention Mechanisms"
    (``shared/reference/sc-unext-paper.txt``). No public code exists; every choice the paper leaves open is ours
    and is documented in ``docs/architecture.md`` with its parameter / MAC cost.

Built on the UNeXt-S widths (:mod:`scunext.models.unext`). Three switches, all on by default; with all three off
the model *is* UNeXt-S (same modules, same parameter names and count, same output):

``sc_skip`` (paper eq. 2, ``z1 = f([Up2x(z2) * x1] + z2)``)
    At each of the 4 skip junctions UNeXt's sum ``up + skip`` becomes ``up * skip + up``, where ``up`` is UNeXt's
    channel-matched, upsampled decoder feature (Conv3x3 -> BN -> bilinear x2 -> ReLU, the paper's "Z4 features
    obtained by the convolution operation and the upsampling operation") and ``f`` is the block that follows
    (a shifted-MLP block at 1/16 and 1/8, the next conv stage below). No parameters, no MACs.
``cbam`` (paper eq. 1)
    CBAM (channel gate then spatial gate) refines the encoder skip features before the fusion ("attention-guided
    fusion"), at the skip levels in ``cbam_levels`` (default: the 1/4 skip only; the 1/2 skip as well with
    ``cbam_levels=(2, 3)``, which cost 3.5-7 % of a CPU training step in two runs, see docs/architecture.md).
``pfm`` (paper section 3.4)
    Replaces UNeXt's last decoder stage (Conv3x3 at 1/2 -> bilinear x2 -> ReLU -> 1x1 head). The ``pfm_levels``
    finest decoder features are each projected by a bias-free 1x1 conv to ``pfm_channels`` at their own resolution
    and expanded to full resolution by learnable depthwise transposed convolutions (kernel 4, stride 2, initialised
    to bilinear), applied as a top-down cascade: ``p <- Deconv(p + proj(level))`` from coarse to fine. Expanding
    each level by a chain of x2 deconvolutions costs 16 weights per channel and step, where one direct 8x
    deconvolution (the default's coarsest level) would cost 256, and 16x 1024. The sum is batch-normalised, ReLU'd
    and a 1x1 head gives the logits.

The default configuration has fewer parameters than UNeXt-S (the paper: 243.63 "KB" vs 247.62) and stays within
0.135 GMACs at 256x256; exact numbers are pinned in the tests and tabulated in ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models._registry import register_model
from scunext.models.base import check_positive_int
from scunext.models.layers import CBAM, bilinear_kernel
from scunext.models.unext import UNEXT_VARIANTS, UNeXt

__all__ = ["PyramidFusion", "SCUNeXt"]


class PyramidFusion(nn.Module):
    """Pyramid feature fusion: levels (coarse -> fine, each twice the previous resolution) are projected to
    ``channels``, expanded by x2 depthwise transposed convolutions in a top-down cascade and summed; the result is
    at twice the finest level's resolution, batch-normalised and ReLU'd.

    Args:
        in_channels: channels of each level, coarse to fine.
        channels: width of the fused map.
    """

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("PyramidFusion needs at least one level")
        check_positive_int("channels", channels)
        self.proj = nn.ModuleList(nn.Conv2d(check_positive_int("in_channels", c), channels, 1, bias=False)
                                  for c in in_channels)  # fmt: skip
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, groups=channels, bias=False)
            for _ in in_channels
        )
        self.norm = nn.BatchNorm2d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start every deconvolution as bilinear x2 upsampling (exact away from the border: the transposed
        convolution's zero padding changes the outermost pixels, where interpolation repeats the edge)."""
        with torch.no_grad():
            for up in self.up:
                up.weight.copy_(bilinear_kernel(4).expand_as(up.weight))

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        # The projections (few output channels) and the depthwise transposed convolutions are several times faster
        # on CPU in channels_last memory format (forward and backward); the values are the same.
        cl = torch.channels_last
        p = None
        for proj, up, x in zip(self.proj, self.up, levels):
            q = proj(x.contiguous(memory_format=cl))
            p = up(q if p is None else p + q)
        return F.relu(self.norm(p.contiguous()))


class SCUNeXt(UNeXt):
    """SC-UNeXt on UNeXt widths, with each new component switchable for ablation.

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        conv_widths, token_widths, depths, mlp_ratio, shift_size, drop_rate, drop_path_rate: as in
            :class:`~scunext.models.unext.UNeXt` (defaults: the UNeXt-S widths).
        cbam: CBAM on the skip features listed in ``cbam_levels``.
        sc_skip: multiplicative SC skip fusion ``up * skip + up`` instead of ``up + skip``.
        pfm: pyramid feature fusion head instead of UNeXt's last stage.
        cbam_levels: skip levels that get CBAM: 0 = 1/16, 1 = 1/8, 2 = 1/4, 3 = 1/2 resolution.
        cbam_reduction: channel-MLP reduction ratio of CBAM.
        cbam_kernel: spatial-attention kernel size of CBAM.
        pfm_levels: how many of the finest decoder levels PFM fuses (1..4; 3 = 1/8, 1/4, 1/2).
        pfm_channels: width of the fused PFM map.

    The ``cbam_*`` / ``pfm_*`` arguments are validated always and used when their switch is on.

    Shapes:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; H and W divisible by 32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        conv_widths: Sequence[int] = UNEXT_VARIANTS["unext_s"]["conv_widths"],
        token_widths: Sequence[int] = UNEXT_VARIANTS["unext_s"]["token_widths"],
        depths: Sequence[int] = (1, 1),
        mlp_ratio: float = 1.0,
        shift_size: int = 5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        cbam: bool = True,
        sc_skip: bool = True,
        pfm: bool = True,
        cbam_levels: Sequence[int] = (2,),
        cbam_reduction: int = 8,
        cbam_kernel: int = 7,
        pfm_levels: int = 3,
        pfm_channels: int = 2,
    ) -> None:
        for name, flag in (("cbam", cbam), ("sc_skip", sc_skip), ("pfm", pfm)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        levels = tuple(cbam_levels) if isinstance(cbam_levels, (list, tuple)) else None
        if levels is None or len(set(levels)) != len(levels) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 4 for i in levels):  # fmt: skip
            raise ValueError(f"cbam_levels must be a list of distinct integers in 0..3, got {cbam_levels!r}")
        if isinstance(pfm_levels, bool) or not isinstance(pfm_levels, int) or not 1 <= pfm_levels <= 4:
            raise ValueError(f"pfm_levels must be an integer in 1..4, got {pfm_levels!r}")
        check_positive_int("pfm_channels", pfm_channels)
        check_positive_int("cbam_reduction", cbam_reduction)  # (CBAM's own messages say reduction / kernel_size)
        if check_positive_int("cbam_kernel", cbam_kernel) % 2 == 0:
            raise ValueError(f"cbam_kernel must be odd, got {cbam_kernel!r}")
        # set before super().__init__, which calls _build_head
        self._switches = dict(cbam=cbam, sc_skip=sc_skip, pfm=pfm)
        self._pfm_cfg = (pfm_levels, pfm_channels)
        super().__init__(
            in_channels, num_classes, conv_widths, token_widths, depths, mlp_ratio, shift_size, drop_rate,
            drop_path_rate,
        )  # fmt: skip
        self.cbam, self.sc_skip, self.pfm = cbam, sc_skip, pfm
        self.init_args.update(
            cbam=cbam, sc_skip=sc_skip, pfm=pfm, cbam_levels=list(levels), cbam_reduction=cbam_reduction,
            cbam_kernel=cbam_kernel, pfm_levels=pfm_levels, pfm_channels=pfm_channels,
        )  # fmt: skip
        # built after super().__init__ (which applies the UNeXt init) so that CBAM keeps PyTorch's default init
        self.attn = nn.ModuleDict()
        if cbam:
            for i in sorted(levels):
                self.attn[str(i)] = CBAM(self.skip_channels[i], cbam_reduction, cbam_kernel)
        else:
            CBAM(1, cbam_reduction, cbam_kernel)  # validate the arguments even when unused

    def _build_head(self, width: int) -> None:
        if not self._switches["pfm"]:
            super()._build_head(width)
            return
        n, channels = self._pfm_cfg
        decoder_widths = (self.skip_channels[0], self.skip_channels[1], self.skip_channels[2], width)
        self.pyramid = PyramidFusion(decoder_widths[-n:], channels)
        self.head = nn.Conv2d(channels, self.num_classes, 1)

    def fuse(self, level: int, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        key = str(level)
        if key in self.attn:
            skip = self.attn[key](skip)
        return up * skip + up if self.sc_skip else up + skip

    def decode_head(self, levels: list[torch.Tensor]) -> torch.Tensor:
        if not self.pfm:
            return super().decode_head(levels)
        fused = self.pyramid(levels[-self._pfm_cfg[0] :])
        # a 1x1 conv on 2 channels at full size is ~20x faster (forward + backward) on CPU in channels_last
        return self.head(fused.contiguous(memory_format=torch.channels_last)).contiguous()


register_model("sc_unext", SCUNeXt, "SC-UNeXt on UNeXt-S widths: CBAM + SC skip + PFM (switchable)")
