"""The preprocessing of one image, shared by training-time validation, inference, export and serving."""

from __future__ import annotations

import numpy as np
import torch

from scunext.data.dataset import convert_channels, normalise, resize_image

__all__ = ["preprocess"]


def preprocess(image: np.ndarray, in_channels: int, size: int) -> torch.Tensor:
    """uint8 image (any channels) -> normalised float32 ``(in_channels, size, size)`` tensor, exactly as in training."""
    img = convert_channels(image, in_channels)
    return normalise(resize_image(img, (size, size)))
