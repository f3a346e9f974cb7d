"""Input validation shared by the losses."""

from __future__ import annotations

import numbers

import torch

__all__ = ["check_logits_target", "check_non_negative"]


def check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate a ``(logits, target)`` pair and return ``target`` as a tensor of the logits' dtype.

    Raises:
        TypeError: if either input is not a tensor or the logits are not floating point.
        ValueError: if the logits are not 4-D ``(B, C, H, W)``, the target shape differs, or a target value lies
            outside [0, 1] or is NaN (0/255 masks gave a negative loss).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"logits and target must be torch.Tensors, got {type(logits).__name__} and {type(target).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() != 4:
        raise ValueError(f"expected logits of shape (B, C, H, W), got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        hint = "; for one class use target.unsqueeze(1)" if target.dim() == 3 else ""
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal logits shape {tuple(logits.shape)} "
            f"(B, C, H, W with values in {{0, 1}}){hint}"
        )
    target = target.to(dtype=logits.dtype, device=logits.device)
    if bool((~((target >= 0) & (target <= 1))).any()):  # NaN fails both comparisons
        raise ValueError(f"target values must lie in [0, 1] (masks as 0/1, not 0/255), got values in "
                         f"[{float(target.min()):g}, {float(target.max()):g}]" +
                         (" and NaN" if bool(target.isnan().any()) else ""))  # fmt: skip
    return target


def check_non_negative(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise a ValueError naming the argument (a bool is
    not a weight: ``edge_weight=true`` was taken as 1.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    value = float(value)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value
