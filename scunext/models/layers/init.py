"""Weight initialisation, applied once at model level."""

from __future__ import annotations

import math

from torch import nn


def init_weights(module: nn.Module) -> None:
    """UNeXt's scheme: truncated normal (std 0.02) for Linear, He-normal by fan-out for convolutions, unit norms.

    Use as ``model.apply(init_weights)``. Transposed convolutions are left alone (their owners initialise them).
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def init_weights_ruan(module: nn.Module) -> None:
    """MALUNet / EGE-UNet's scheme (Ruan et al.): :func:`init_weights` plus their rule for 1-D convolutions,
    ``N(0, 2 / (kernel_size * out_channels))`` not divided by the groups, bias left at PyTorch's default.
    GroupNorm and LayerNorm2d keep their unit / zero start. Use as ``model.apply(init_weights_ruan)``.
    """
    if isinstance(module, nn.Conv1d):
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (module.kernel_size[0] * module.out_channels)))
    else:
        init_weights(module)
