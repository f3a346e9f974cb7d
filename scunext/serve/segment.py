"""One segmentation of the web app: decode an upload, run the model, encode the answer, in bounded memory.

The network only ever sees its own input size (e.g. 256 x 256), so a 7000 x 7000 photo is never needed at full
resolution. The work is done at these sizes:

* **decoded**: a JPEG with more than :data:`WORK_MAX_PIXELS` pixels is decoded at the smallest DCT scale (1/2,
  1/4, 1/8; Pillow's draft mode) that still covers the computed size; other images are decoded at full size.
* **computed**: the decoded image, scaled down further when it has more than :data:`WORK_MAX_PIXELS` pixels, is
  what :class:`~scunext.deploy.predictor.Predictor` segments (preprocessing, network, resizing the probabilities back
  to this size, threshold 0.5). An image no larger than that (every image up to 2048 x 2048) is segmented at its
  native size, exactly as ``scunext predict`` does.
* **native**: the mask download has the image's native size; a mask computed at a smaller size is scaled up by
  nearest neighbour (one byte per pixel, the only native-size buffer), and ``area_px`` is counted on it.
* **display**: the overlay is drawn on the computed image scaled to a longest side of at most
  :data:`DISPLAY_MAX_SIDE` (the page shows it scaled to the window anyway).
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
from PIL import Image

from scunext.data import MAX_IMAGE_PIXELS
from scunext.serve.models import ServedModel
from scunext.serve.upload import DecodedUpload, decode_upload, fit_size
from scunext.visualize import overlay

__all__ = ["DISPLAY_MAX_SIDE", "WORK_MAX_PIXELS", "segment", "segment_image", "segment_upload"]

#: longest side of the overlay returned to the page
DISPLAY_MAX_SIDE = 1024
#: most pixels the model's probabilities and mask are computed at (2048 x 2048); larger images are scaled down
WORK_MAX_PIXELS = 2048 * 2048


def _resize(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """``array`` (uint8, 2-D or H x W x 3) resized to ``(h, w)`` by Pillow; unchanged when already that size."""
    if array.shape[:2] == size:
        return array
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), resample))


def _png_base64(picture: np.ndarray | Image.Image) -> str:
    im = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def segment(
    model: ServedModel,
    upload: DecodedUpload,
    *,
    work_pixels: int = WORK_MAX_PIXELS,
    display_side: int = DISPLAY_MAX_SIDE,
) -> dict[str, Any]:
    """Segment one decoded upload and build the ``POST /api/segment`` answer (see the module docstring for sizes).

    ``inference_ms`` times the ``Predictor.predict`` call (preprocessing, network, resizing the probabilities to the
    computed size). ``quality_score`` and ``review`` are reserved for the model's confidence score and review flag
    (``null`` until the server computes them).
    """
    height, width = upload.size
    work = _resize(upload.image, fit_size(upload.image.shape[:2], max_pixels=work_pixels), Image.Resampling.BILINEAR)
    with model.lock:  # one inference per model at a time: keeps the timing honest
        start = time.perf_counter()
        mask = model.predictor.predict([work])[0]
        ms = (time.perf_counter() - start) * 1000.0
    mask_u8 = mask.astype(np.uint8) * 255
    if mask.shape == (height, width):
        area = int(np.count_nonzero(mask))
        mask_png = _png_base64(mask_u8)
    else:  # computed smaller than native: scale the mask up (1 byte a pixel) and count on the native mask
        native = Image.fromarray(mask_u8).resize((width, height), Image.Resampling.NEAREST)
        area = int(native.histogram()[255])
        mask_png = _png_base64(native)
        del native
    display = fit_size(work.shape[:2], max_side=display_side)
    shown = overlay(
        _resize(work, display, Image.Resampling.BILINEAR),
        _resize(mask_u8, display, Image.Resampling.NEAREST) > 0,
    )
    spacing = upload.pixel_spacing_mm
    return {
        "model": model.id,
        "label": model.label,
        "width": width,
        "height": height,
        "area_px": area,
        "area_percent": 100.0 * area / (width * height),
        "pixel_spacing_mm": list(spacing) if spacing is not None else None,
        "area_mm2": area * spacing[0] * spacing[1] if spacing is not None else None,
        "computed_width": int(mask.shape[1]),
        "computed_height": int(mask.shape[0]),
        "inference_ms": round(ms, 2),
        "quality_score": None,
        "review": None,
        "overlay_png": _png_base64(shown),
        "mask_png": mask_png,
    }


def segment_upload(
    model: ServedModel,
    data: bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    work_pixels: int = WORK_MAX_PIXELS,
    display_side: int = DISPLAY_MAX_SIDE,
) -> dict[str, Any]:
    """Decode the uploaded bytes (a JPEG above ``work_pixels`` at a reduced scale) and :func:`segment` them: the
    whole job that the server's worker pool runs.

    Raises:
        UploadError: the upload is refused (see :func:`~scunext.serve.upload.decode_upload`).
    """
    upload = decode_upload(data, max_pixels=max_pixels, work_pixels=work_pixels)
    return segment(model, upload, work_pixels=work_pixels, display_side=display_side)


def segment_image(model: ServedModel, image: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    """:func:`segment` for an image already decoded at its native size (no pixel spacing)."""
    return segment(model, DecodedUpload(image, "array", image.shape[:2]), **kwargs)
