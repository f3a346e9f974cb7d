"""Model zoo. Importing this package registers every architecture."""

from __future__ import annotations

from scunext.models import egeunet, malunet, resunetpp, sc_unext, unet, unext  # noqa: F401  (registration side effects)
from scunext.models._registry import create_model, list_models, model_info, register_model
from scunext.models.base import InputShapeError, SegmentationModel
from scunext.models.outputs import DeepSupervisionOutput

__all__ = [
    "DeepSupervisionOutput",
    "InputShapeError",
    "SegmentationModel",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
