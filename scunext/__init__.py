"""scunext: fast, lightweight 2D medical image segmentation (UNeXt, SC-UNeXt and baselines)."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "create_model", "list_models", "model_info"]

_MODELS_API = ("create_model", "list_models", "model_info")


def __getattr__(name: str):
    """``scunext.create_model`` & co. are imported on first use (they import torch): ``import scunext`` stays light,
    so that the command line's start-up is inside its own Ctrl+C handling."""
    if name in _MODELS_API or name == "models":
        import importlib

        models = importlib.import_module("scunext.models")
        return models if name == "models" else getattr(models, name)
    raise AttributeError(f"module 'scunext' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODELS_API])
