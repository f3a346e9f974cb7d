"""Model registry: variants are data (a name, a class and its constructor arguments), not copied classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["ModelSpec", "register_model", "create_model", "list_models", "model_info", "UnknownModelError"]


class UnknownModelError(KeyError, ValueError):
    """Raised for a model name that is not registered. Its message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """One registered variant.

    Attributes:
        name: registry name, e.g. ``"unext_s"``.
        cls: the model class.
        kwargs: constructor arguments that define the variant (widths, switches).
        description: one line for ``list_models`` tables and the CLI.
    """

    name: str
    cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, cls: type, description: str = "", **kwargs: Any) -> ModelSpec:
    """Register ``cls(**kwargs)`` under ``name``. Re-registering a name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    spec = ModelSpec(name=name, cls=cls, kwargs=dict(kwargs), description=description)
    _REGISTRY[name] = spec
    return spec


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; raises :class:`UnknownModelError` listing valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(list_models())}"
        ) from None


def create_model(name: str, in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        in_channels: image channels (1 for X-rays, 3 for dermoscopy).
        num_classes: output channels (logits); 1 for binary segmentation.
        **overrides: constructor arguments that replace the variant's defaults (e.g. ``pfm=False``).

    Returns:
        The model, which maps ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)``.

    Raises:
        UnknownModelError: ``name`` is not registered (the message lists valid names).
        ValueError: a constructor argument is invalid.
        TypeError: an override names an argument the model does not have.

    Example:
        >>> import scunext
        >>> model = scunext.create_model("sc_unext", in_channels=1, cbam=False)
    """
    spec = model_info(name)
    kwargs = {**spec.kwargs, **overrides}
    return spec.cls(in_channels=in_channels, num_classes=num_classes, **kwargs)
