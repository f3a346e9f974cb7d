"""Shared base class: argument checks, input contract and constructor bookkeeping for every model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SegmentationModel", "InputShapeError", "check_positive_int", "check_number"]


class InputShapeError(ValueError):
    """An input tensor the model cannot handle (wrong rank, channels or spatial size)."""


def check_positive_int(name: str, value: Any, most: int | None = None) -> int:
    """Return ``value`` if it is a positive int (at most ``most`` when given), else raise a ValueError naming the
    argument. ``most`` bounds counts of layers, which no allocation error stops: 100 million blocks are built one
    small module at a time until the machine runs out of memory."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{name} must be at most {most}, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float, high: float, *, high_open: bool = False,
                 low_open: bool = False) -> float:
    """Return ``value`` if it is a real number (not a bool, not a string such as YAML's ``1e-1``) within
    ``[low, high]`` (an open end where asked), else raise a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be a number, got {value!r}")
    if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_widths(name: str, value: Any, length: int, most: int | None = None) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ``length`` positive ints (each at most ``most``), else raise a ValueError."""
    try:
        widths = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {length} positive integers, got {value!r}") from None
    if len(widths) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(widths)}: {value!r}")
    for w in widths:
        check_positive_int(name, w, most)
    return widths


def _exporting() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if hasattr(torch, "onnx") and torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


class SegmentationModel(nn.Module):
    """Base class: ``(B, in_channels, H, W)`` image -> ``(B, num_classes, H, W)`` logits.

    Subclasses set :attr:`input_divisor` (H and W must be multiples of it), call
    ``super().__init__(in_channels, num_classes)`` first and implement :meth:`forward_features`.
    The constructor arguments are kept in :attr:`init_args` so that a checkpoint can rebuild the model.

    Args:
        in_channels: number of image channels (>= 1).
        num_classes: number of output logit channels (>= 1).
    """

    input_divisor: int = 1

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.init_args: dict[str, Any] = {"in_channels": in_channels, "num_classes": num_classes}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` with a hint if ``x`` does not fit the model."""
        if x.dim() != 4:
            raise InputShapeError(f"expected a 4-D tensor (B, C, H, W), got shape {tuple(x.shape)}")
        weight = next(self.parameters(), None)
        if not x.is_floating_point() or (weight is not None and x.dtype != weight.dtype
                                         and not _autocast_on(x.device.type)):
            want = weight.dtype if weight is not None else torch.float32
            raise InputShapeError(f"{type(self).__name__} takes a {want} input (normalised images), got {x.dtype}; "
                                  f"convert it with x.to({want}) after normalising (scunext.data.preprocess)")
        _, c, h, w = x.shape
        if c != self.in_channels:
            raise InputShapeError(
                f"{type(self).__name__} was built for in_channels={self.in_channels}, got an input with {c} channels"
            )
        d = self.input_divisor
        if h % d or w % d or h == 0 or w == 0:
            ph, pw = max(d, -(-h // d) * d), max(d, -(-w // d) * d)
            raise InputShapeError(
                f"{type(self).__name__} needs H and W divisible by {d}, got {h}x{w}; resize or pad to {ph}x{pw}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(B, num_classes, H, W)``."""
        if not _exporting():
            self.check_input(x)
        return self.forward_features(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_params(self, trainable_only: bool = False) -> int:
        """Exact number of parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (the one-argument form is torch >= 2.4; older ones had one
    function per device)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:
        return bool(torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled())
