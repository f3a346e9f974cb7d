"""Per-image intensity standardisation: one switchable step inside the single preprocessing path.

Selected by the run's ``intensity`` config field and applied by :func:`scunext.data.preprocess.model_input` to the
uint8 image at the model's input size, after resizing (and after augmentation in training), right before
normalisation. Training, validation, evaluation, predict, export and serve therefore see the same step.

* ``none`` (default): unchanged, so runs made before this option existed load and predict exactly as before.
* ``percentile``: per channel, the 1st and 99th percentiles are stretched linearly to 0 and 255 (values outside
  clipped). Undoes gain, offset, wash-out and contrast compression (and, per channel, a colour cast). A flat
  channel (p99 - p1 < 1) is left unchanged.
* ``clahe``: contrast-limited adaptive histogram equalisation (OpenCV, clip limit 2.0, 8x8 tiles) of a grayscale
  image, or of the L channel of CIE L*a*b* for a colour image. Needs OpenCV (``pip install opencv-python-headless``,
  part of ``scunext[train]``).
"""

from __future__ import annotations

import numpy as np

from scunext.errors import MissingDependencyError

__all__ = ["INTENSITY_METHODS", "DESCRIPTIONS", "standardise_intensity", "check_intensity"]

INTENSITY_METHODS = ("none", "percentile", "clahe")
PERCENTILES = (1.0, 99.0)
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


DESCRIPTIONS = {  # what each step does, as stored in exported ONNX files (Predictor.preprocessing)
    "none": "nothing",
    "percentile": "per channel, 1st..99th percentile stretched linearly to 0..255, clipped "
    "(left alone if p99 - p1 < 1)",
    "clahe": "OpenCV CLAHE, clip 2.0, 8x8 tiles (gray, or L of CIE L*a*b*)",
}


def check_intensity(method: str) -> str:
    """Return ``method`` or raise ValueError listing the valid ones."""
    if method not in INTENSITY_METHODS:
        raise ValueError(f"intensity must be one of {', '.join(INTENSITY_METHODS)}, got {method!r}")
    return method


def _percentile(image: np.ndarray) -> np.ndarray:
    out = np.empty_like(image)
    for c in range(image.shape[2]):
        plane = image[..., c]
        lo, hi = np.percentile(plane, PERCENTILES)
        if hi - lo < 1:
            out[..., c] = plane
            continue
        out[..., c] = np.clip(np.rint((plane.astype(np.float32) - lo) * (255.0 / (hi - lo))), 0, 255)
    return out


def _clahe(image: np.ndarray) -> np.ndarray:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "intensity 'clahe' needs OpenCV: pip install opencv-python-headless (or 'scunext[train]')"
        ) from exc
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES)
    if image.shape[2] == 1:
        return clahe.apply(np.ascontiguousarray(image[..., 0]))[..., None]
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def standardise_intensity(image: np.ndarray, method: str = "none") -> np.ndarray:
    """Apply intensity step ``method`` to a uint8 ``(H, W, C)`` image (C = 1 or 3); returns uint8 of the same shape.

    ``none`` returns the input object itself (no copy), so the default path is bit-identical to before.
    """
    check_intensity(method)
    if method == "none":
        return image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"intensity step needs a uint8 (H, W, 1|3) image, got {image.dtype} {image.shape}")
    return _percentile(image) if method == "percentile" else _clahe(image)
