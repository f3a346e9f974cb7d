"""The preprocessing of an image into a model, in one module: the steps (channels, resize, the intensity step,
normalisation) that the training dataset applies around its augmentation, and :func:`preprocess`, the same steps in
one call for inference, export and serving."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from scunext.data.intensity import standardise_intensity

__all__ = ["preprocess", "check_uint8", "convert_channels", "resize_pair", "resize_image", "normalise", "model_input"]


def preprocess(image: np.ndarray, in_channels: int, size: int, intensity: str = "none") -> torch.Tensor:
    """uint8 image (any channels) -> float32 ``(in_channels, size, size)`` tensor, exactly as in training:
    channel conversion, resize (:func:`resize_image`, the image half of :func:`resize_pair`), then
    :func:`model_input` (the run's ``intensity`` step and normalisation), the same final step as the training
    dataset."""
    check_uint8(image)
    img = convert_channels(image, in_channels)
    return model_input(resize_image(img, (size, size)), intensity)


def check_uint8(image: np.ndarray) -> None:
    """Refuse an image that is not uint8: every step divides by 255 as for 8-bit pixels, so a float image in [0, 1]
    became an almost black input (an empty mask, no error) and a 16-bit one a saturated one."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy uint8 image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
        raise ValueError(f"expected a uint8 image (0-255), got {image.dtype} with values in [{lo:g}, {hi:g}]; convert "
                         "it first (a [0, 1] float: (image * 255).round().astype(np.uint8)) or read files with "
                         "scunext.data.read_image, which returns uint8 (16-bit files scaled)")  # fmt: skip


def convert_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """Return ``image`` (uint8, ``(H, W)`` or ``(H, W, C)``) as ``(H, W, in_channels)``.

    Grayscale -> 3 channels repeats the gray plane. RGB -> 1 channel uses the ITU-R 601-2 luma transform
    ``L = R * 299/1000 + G * 587/1000 + B * 114/1000`` (Pillow's ``convert("L")``).
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image[..., None] if in_channels == 1 else np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}")
    if in_channels == 3:
        return image
    return np.array(Image.fromarray(image, mode="RGB").convert("L"), dtype=np.uint8)[..., None]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image`` (uint8 ``(H, W, C)``) and ``mask`` (``(H, W)``) to ``size = (height, width)``.

    The image uses area averaging (Pillow ``BOX``) when both sides shrink and bilinear interpolation otherwise;
    the mask uses nearest neighbour, so it stays binary. Inputs already at ``size`` are returned unchanged.
    """
    h, w = image.shape[:2]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return image, mask
    mask_u8 = mask.astype(np.uint8)
    mask_out = np.asarray(Image.fromarray(mask_u8).resize((out_w, out_h), Image.Resampling.NEAREST))
    return resize_image(image, size), mask_out.astype(mask.dtype)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image half of :func:`resize_pair` (uint8 ``(H, W, C)`` -> ``(height, width, C)``, area averaging when
    both sides shrink, bilinear otherwise), for inference, where there is no mask to carry along."""
    h, w = image.shape[:2]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return image
    method = Image.Resampling.BOX if out_h <= h and out_w <= w else Image.Resampling.BILINEAR
    planes = [np.asarray(Image.fromarray(image[..., c]).resize((out_w, out_h), method)) for c in range(image.shape[2])]
    return np.stack(planes, axis=2)


def normalise(image: np.ndarray, mean: float | np.ndarray = 0.5, std: float | np.ndarray = 0.5) -> torch.Tensor:
    """uint8 ``(H, W, C)`` -> float32 ``(C, H, W)`` tensor ``(image / 255 - mean) / std``: the only scaling, shared
    by training (:class:`SegmentationDataset`) and inference (:class:`scunext.deploy.predictor.Predictor`)."""
    img = torch.from_numpy(np.array(image.transpose(2, 0, 1), dtype=np.float32, order="C")).div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return (img - mean_t) / std_t


def model_input(
    image: np.ndarray, intensity: str = "none", mean: float | np.ndarray = 0.5, std: float | np.ndarray = 0.5
) -> torch.Tensor:
    """The last step of every path into a model: uint8 ``(H, W, C)`` at the model's size -> the intensity step
    (:func:`~scunext.data.intensity.standardise_intensity`) -> :func:`normalise`. Training
    (:class:`SegmentationDataset`, after augmentation) and inference (:func:`scunext.data.preprocess.preprocess`)
    both end here, so the two cannot drift apart."""
    check_uint8(image)
    return normalise(standardise_intensity(image, intensity), mean, std)
