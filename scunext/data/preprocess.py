"""The preprocessing of one image, shared by training-time validation, inference, export and serving."""

from __future__ import annotations

import numpy as np
import torch

from scunext.data.dataset import convert_channels, model_input, resize_image

__all__ = ["preprocess"]


def preprocess(image: np.ndarray, in_channels: int, size: int, intensity: str = "none") -> torch.Tensor:
    """uint8 image (any channels) -> float32 ``(in_channels, size, size)`` tensor, exactly as in training:
    channel conversion, resize (:func:`~scunext.data.dataset.resize_pair`), then :func:`~scunext.data.dataset.
    model_input` (the run's ``intensity`` step and normalisation), the same final step as the training dataset."""
    img = convert_channels(image, in_channels)
    return model_input(resize_image(img, (size, size)), intensity)
