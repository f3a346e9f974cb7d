"""EGE-UNet: an efficient group enhanced UNet for skin lesion segmentation.

Paper:
    J. Ruan, M. Xie, J. Gao, T. Liu and Y. Fu, "EGE-UNet: an Efficient Group Enhanced UNet for skin lesion
    segmentation", MICCAI 2023, arXiv:2307.08473.

    @inproceedings{ruan2023egeunet,
      title={EGE-UNet: an Efficient Group Enhanced UNet for skin lesion segmentation},
      author={Ruan, Jiacheng and Xie, Mingye and Gao, Jingsheng and Liu, Ting and Fu, Yuzhuo},
      booktitle={MICCAI}, year={2023}}

Reference code: JCruan519/EGE-UNet ``models/egeunet.py`` and ``utils.py`` (Apache-2.0), read for facts only; this
file is written anew.

Architecture: MALUNet's six-stage skeleton (:class:`~scunext.models.malunet.SixStageUNet`) with every attention
block a grouped multi-axis Hadamard product attention (GHPA), and the skips refined in the decoder by group
aggregation bridges (GAB):

    at decoder level j (1/32 .. 1/2): ``d_j`` = decoder step output; ``m_j = head_j(d_j)`` (1x1 conv, the
    deep-supervision "mask" logits); ``t_j <- GAB_j(t_{j+1}, t_j, m_j)`` with ``t_6`` the bottleneck and ``t_{j+1}``
    the already refined deeper skip; ``d_j + t_j`` goes on. The final head is MALUNet's.

Deep supervision (``gt_ds=True``): in training mode the model returns a
:class:`~scunext.models.outputs.DeepSupervisionOutput` whose ``aux`` are the five ``m_j`` upsampled to the input
size (bilinear, align_corners, deepest first), which :class:`~scunext.losses.DeepSupervisionLoss` weights 0.1, 0.2,
0.3, 0.4, 0.5 as the official ``GT_BceDiceLoss``. In eval mode it returns the logits tensor alone. With the bridge on,
the five 1x1 heads are part of the inference path (their maps are the GABs' mask input; 133 parameters, 0.05 M MACs)
and only the upsampling of the auxiliary maps is skipped; with the bridge off they are not run at all at inference.

Parameter- and MAC-exact with the official ``EGEUNet(c_list=[8,16,24,32,48,64], bridge=True, gt_ds=True)``:
53,374 parameters (the five deep-supervision heads included) and 72,096,256 MACs (0.0721 G) for 3 input channels,
1 class, 1x3x256x256 (``torch.utils.flop_counter`` FLOPs / 2); pinned in ``tests/test_models.py``.

Where the official code gives no answer (decided here, documented in ``docs/architecture.md``):
    * ``bridge=False``: the official forward calls the GABs regardless (it fails); here the raw encoder skips are
      added, as in MALUNet without bridge.
    * ``gt_ds=False`` with the bridge: the official GAB requires the mask (it fails); here each GAB group has no mask
      channel (``dim/2`` instead of ``dim/2 + 1`` channels) and there are no heads.
    * ``num_classes > 1``: the heads give ``num_classes`` channels (so that the auxiliary losses compare like with
      like) and each GAB group takes all of them; for one class this is the official layout.
Other deviations, none of which changes the parameter count or the function: logits instead of sigmoid
probabilities; the axis-wise weight maps broadcast over the third axis instead of permuting the features (same
products); no ``print``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scunext.models._registry import register_model
from scunext.models.base import check_positive_int, check_widths
from scunext.models.layers import LayerNorm2d, upsample_aligned
from scunext.models.malunet import SixStageUNet
from scunext.models.outputs import DeepSupervisionOutput

__all__ = ["EGEUNet", "EGEUNET_VARIANTS", "GroupedHadamardAttention", "GroupAggregationBridge"]


def _dw_mlp_2d(channels: int) -> nn.Sequential:
    """Depthwise 3x3 -> GELU -> pointwise, on a 2-D map."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.GELU(),
                         nn.Conv2d(channels, channels, 1))  # fmt: skip


def _dw_mlp_1d(channels: int) -> nn.Sequential:
    """Depthwise 3 -> GELU -> pointwise, on a 1-D sequence."""
    return nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1, groups=channels), nn.GELU(),
                         nn.Conv1d(channels, channels, 1))  # fmt: skip


class GroupedHadamardAttention(nn.Module):
    """Grouped multi-axis Hadamard product attention (GHPA).

    After a channel LayerNorm the channels are split into 4 groups of ``q = in_channels / 4``. Three groups are
    multiplied element-wise by a learned weight map on one pair of axes, stored small and resized (bilinear,
    align_corners) to the feature size, then refined by a depthwise -> GELU -> pointwise MLP: (C, H, W) from a
    ``q x size x size`` parameter, (C, H) and (C, W) from ``q x size`` parameters (broadcast over the missing axis).
    The fourth group goes through pointwise -> GELU -> depthwise 3x3. The groups are concatenated, LayerNorm'd and
    mapped by depthwise 3x3 -> GELU -> pointwise to ``out_channels``.

    Args:
        in_channels: input channels (a multiple of 4).
        out_channels: output channels.
        size: side of the stored weight maps (official 8).
    """

    def __init__(self, in_channels: int, out_channels: int, size: int = 8) -> None:
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"GroupedHadamardAttention needs in_channels divisible by 4, got {in_channels}")
        check_positive_int("size", size)
        q = in_channels // 4
        self.params_hw = nn.Parameter(torch.ones(1, q, size, size))
        self.params_ch = nn.Parameter(torch.ones(1, 1, q, size))
        self.params_cw = nn.Parameter(torch.ones(1, 1, q, size))
        self.mlp_hw = _dw_mlp_2d(q)
        self.mlp_ch = _dw_mlp_1d(q)
        self.mlp_cw = _dw_mlp_1d(q)
        self.local = nn.Sequential(nn.Conv2d(q, q, 1), nn.GELU(), nn.Conv2d(q, q, 3, padding=1, groups=q))
        self.norm_in = LayerNorm2d(in_channels)
        self.norm_out = LayerNorm2d(in_channels)
        self.out = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels), nn.GELU(),
            nn.Conv2d(in_channels, out_channels, 1),
        )  # fmt: skip

    @staticmethod
    def _axis_map(param: torch.Tensor, length: int, mlp: nn.Module) -> torch.Tensor:
        """``(1, 1, q, size)`` -> resized to ``(q, length)`` -> MLP over the sequence -> ``(1, q, length)``."""
        resized = F.interpolate(param, size=(param.shape[2], length), mode="bilinear", align_corners=True)
        return mlp(resized[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(x)
        g_hw, g_ch, g_cw, g_local = torch.chunk(x, 4, dim=1)
        h, w = x.shape[2], x.shape[3]
        hw = self.mlp_hw(F.interpolate(self.params_hw, size=(h, w), mode="bilinear", align_corners=True))
        ch = self._axis_map(self.params_ch, h, self.mlp_ch).unsqueeze(-1)  # (1, q, H, 1)
        cw = self._axis_map(self.params_cw, w, self.mlp_cw).unsqueeze(-2)  # (1, q, 1, W)
        x = torch.cat([g_hw * hw, g_ch * ch, g_cw * cw, self.local(g_local)], dim=1)
        return self.out(self.norm_out(x))


class GroupAggregationBridge(nn.Module):
    """Group aggregation bridge (GAB): refines the skip ``low`` with the deeper feature ``high`` and a mask.

    ``high`` is projected (1x1) to ``low``'s channels and resized (bilinear, align_corners) to its size; both are split
    into 4 channel groups; group i is ``[high_i, low_i, mask]`` -> LayerNorm -> depthwise 3x3 conv with dilation
    ``dilations[i]`` (1, 2, 5, 7); the groups are concatenated, LayerNorm'd and mapped back by a 1x1 conv.

    Args:
        high_channels: channels of the deeper feature.
        low_channels: channels of the skip (a multiple of 4) and of the output.
        mask_channels: channels of the mask (official: 1; 0 for a bridge without mask).
        dilations: one per group.
    """

    def __init__(
        self, high_channels: int, low_channels: int, mask_channels: int = 1, dilations: Sequence[int] = (1, 2, 5, 7)
    ) -> None:
        super().__init__()
        if low_channels % 4:
            raise ValueError(f"GroupAggregationBridge needs low_channels divisible by 4, got {low_channels}")
        if isinstance(mask_channels, bool) or not isinstance(mask_channels, int) or mask_channels < 0:
            raise ValueError(f"mask_channels must be an integer >= 0, got {mask_channels!r}")
        rates = check_widths("dilations", dilations, 4)
        self.mask_channels = mask_channels
        g = low_channels // 2 + mask_channels
        self.project = nn.Conv2d(high_channels, low_channels, 1)
        self.groups = nn.ModuleList(
            nn.Sequential(LayerNorm2d(g), nn.Conv2d(g, g, 3, padding=d, dilation=d, groups=g)) for d in rates
        )
        self.tail = nn.Sequential(LayerNorm2d(4 * g), nn.Conv2d(4 * g, low_channels, 1))

    def forward(self, high: torch.Tensor, low: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if (mask is None) != (self.mask_channels == 0):
            raise ValueError(f"this bridge was built for mask_channels={self.mask_channels}; pass a mask iff > 0")
        high = self.project(high)
        high = F.interpolate(high, size=(low.shape[2], low.shape[3]), mode="bilinear", align_corners=True)
        extra = [] if mask is None else [mask]
        groups = [
            block(torch.cat([h, lo, *extra], dim=1))
            for block, h, lo in zip(self.groups, torch.chunk(high, 4, dim=1), torch.chunk(low, 4, dim=1))
        ]
        return self.tail(torch.cat(groups, dim=1))


class EGEUNet(SixStageUNet):
    """EGE-UNet (one class; widths and switches from arguments).

    Args:
        in_channels: image channels.
        num_classes: logit channels.
        widths: ``c0..c5`` (official 8, 16, 24, 32, 48, 64).
        bridge: group aggregation bridges on the skips (off: the raw encoder skips are added).
        gt_ds: deep supervision: a 1x1 head per decoder level whose logits feed the bridges (when on) and, in
            training mode, are returned upsampled for the auxiliary losses.

    Shapes:
        eval: ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits; training with ``gt_ds``:
        :class:`~scunext.models.outputs.DeepSupervisionOutput` (main logits, 5 auxiliary logits of the same shape).
        H and W divisible by 32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        widths: Sequence[int] = (8, 16, 24, 32, 48, 64),
        bridge: bool = True,
        gt_ds: bool = True,
    ) -> None:
        for name, flag in (("bridge", bridge), ("gt_ds", gt_ds)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        super().__init__(in_channels, num_classes, widths)
        w = self.widths
        levels = (4, 3, 2, 1, 0)  # decoder level j works at the width of skip t_{5-j}, i.e. w[4 - j]
        mask = num_classes if gt_ds else 0
        self.bridges = nn.ModuleList(GroupAggregationBridge(w[i + 1], w[i], mask) for i in levels) if bridge else None
        self.ds_heads = nn.ModuleList(nn.Conv2d(w[i], num_classes, 1) for i in levels) if gt_ds else None
        self.init_args.update(bridge=bridge, gt_ds=gt_ds)
        self.init_parameters()

    def encoder_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return GroupedHadamardAttention(in_channels, out_channels)

    def decoder_block(self, in_channels: int, out_channels: int) -> nn.Module:
        return GroupedHadamardAttention(in_channels, out_channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor | DeepSupervisionOutput:
        x, skips = self.encode(x)
        high = x  # t6, the bottleneck
        heads_needed = self.ds_heads is not None and (self.bridges is not None or self.training)
        aux = []
        for level, skip in enumerate(reversed(skips)):
            x = self.decode_step(level, x)
            m = self.ds_heads[level](x) if heads_needed else None
            if self.bridges is not None:
                skip = self.bridges[level](high, skip, m)
                high = skip
            if m is not None and self.training:
                aux.append(upsample_aligned(m, 2 ** (5 - level)))
            x = x + skip
        out = self.logits(x)
        if aux:
            return DeepSupervisionOutput(out, tuple(aux))
        return out


#: Official configuration (JCruan519/EGE-UNet ``EGEUNet`` defaults).
EGEUNET_VARIANTS = {"egeunet": dict(widths=(8, 16, 24, 32, 48, 64), bridge=True, gt_ds=True)}

register_model(
    "egeunet", EGEUNet, "EGE-UNet (Ruan et al. 2023), official widths 8..64, GAB bridge + deep supervision",
    **EGEUNET_VARIANTS["egeunet"],
)  # fmt: skip
