"""scunext: fast, lightweight 2D medical image segmentation (UNeXt, SC-UNeXt and baselines)."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from scunext.models import create_model, list_models, model_info  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "create_model", "list_models", "model_info"]
