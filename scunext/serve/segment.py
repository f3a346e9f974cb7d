"""One segmentation of the web app: decode an upload, run the model, encode the answer, in bounded memory.

The network only ever sees its own input size (e.g. 256 x 256), so a 7000 x 7000 photo is never needed at full
resolution. The work is done at these sizes:

* **decoded**: a JPEG with more than :data:`WORK_MAX_PIXELS` pixels is decoded at the smallest DCT scale (1/2,
  1/4, 1/8; Pillow's draft mode) that still covers the computed size; other images are decoded at full size (one
  such large decode at a time in the server, ``large_decode_lock``).
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
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from PIL import Image

from scunext.data import MAX_IMAGE_PIXELS, area_mm2
from scunext.deploy.quality import quality_from_logits
from scunext.serve.models import ServedModel
from scunext.serve.upload import DecodedUpload, decode_upload, fit_size, needs_full_decode
from scunext.visualize import overlay

__all__ = ["DISPLAY_MAX_SIDE", "WORK_MAX_PIXELS", "segment", "segment_image", "segment_upload"]

#: longest side of the overlay returned to the page
DISPLAY_MAX_SIDE = 1024
#: most pixels the model's probabilities and mask are computed at (2048 x 2048); larger images are scaled down
WORK_MAX_PIXELS = 2048 * 2048


def _resize(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """``array`` (uint8, ``(H, W)`` or ``(H, W, C)``) resized to ``(h, w)`` by Pillow, one plane at a time (a Pillow
    RGB image would hold 4 bytes a pixel); returned unchanged when already that size."""
    if array.shape[:2] == size:
        return array
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array).resize((size[1], size[0]), resample))
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c])).resize((size[1], size[0]), resample))
        for c in range(array.shape[2])
    ]
    return np.stack(planes, axis=2)


def _shrink(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """The image to segment: ``image`` itself when it has at most ``max_pixels`` pixels, else scaled down to fit by
    area averaging (Pillow ``BOX``, as :func:`scunext.data.preprocess` shrinks)."""
    return _resize(image, fit_size(image.shape[:2], max_pixels=max_pixels), Image.Resampling.BOX)


def _png_base64(picture: np.ndarray | Image.Image) -> str:
    im = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _answer(
    model: ServedModel,
    work: np.ndarray,
    size: tuple[int, int],
    spacing: tuple[float, float] | None,
    display_side: int,
) -> dict[str, Any]:
    """Segment ``work`` (the image at the computed size) and build the answer for an image of native ``size``."""
    height, width = size
    predictor = model.predictor
    with model.lock:  # one inference per model at a time: keeps the timing honest
        start = time.perf_counter()
        x = predictor.prepare(work)[None]
        logits = predictor.logits(x)
        mask = predictor.mask_from_logits(logits[0], work.shape[:2])  # exactly Predictor.predict's mask
        ms = (time.perf_counter() - start) * 1000.0
        flipped = predictor.logits(x.flip(-1)).flip(-1)  # the quality score's extra pass, not in inference_ms
    quality = quality_from_logits(logits[0], flipped[0], predictor.quality, predictor.threshold)
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
        _resize(work, display, Image.Resampling.BOX), _resize(mask_u8, display, Image.Resampling.NEAREST) > 0
    )
    return {
        "model": model.id,
        "label": model.label,
        "width": width,
        "height": height,
        "area_px": area,
        "area_percent": 100.0 * area / (width * height),
        "pixel_spacing_mm": list(spacing) if spacing is not None else None,
        "area_mm2": area_mm2(area, spacing),
        "computed_width": int(mask.shape[1]),
        "computed_height": int(mask.shape[0]),
        "inference_ms": round(ms, 2),
        "quality_score": round(quality.score, 4),
        "review": quality.review,
        "review_reason": quality.reason,
        "overlay_png": _png_base64(shown),
        "mask_png": mask_png,
    }


def segment(
    model: ServedModel,
    upload: DecodedUpload,
    *,
    work_pixels: int = WORK_MAX_PIXELS,
    display_side: int = DISPLAY_MAX_SIDE,
) -> dict[str, Any]:
    """Segment one decoded upload and build the ``POST /api/segment`` answer (see the module docstring for sizes).

    ``inference_ms`` times what ``Predictor.predict`` does (preprocessing, network, resizing the logits to the
    computed size). ``quality_score``, ``review`` and ``review_reason`` are the model's quality score and review flag
    (:func:`scunext.deploy.quality.quality_from_logits`, as in ``predictions.csv`` of ``scunext predict``).
    """
    return _answer(model, _shrink(upload.image, work_pixels), upload.size, upload.pixel_spacing_mm, display_side)


def segment_upload(
    model: ServedModel,
    data: bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    work_pixels: int = WORK_MAX_PIXELS,
    display_side: int = DISPLAY_MAX_SIDE,
    large_decode_lock: AbstractContextManager | None = None,
) -> dict[str, Any]:
    """Decode the uploaded bytes (a JPEG above ``work_pixels`` at a reduced scale) and :func:`segment` them: the
    whole job that the server's worker pool runs. The decoded image is dropped as soon as the computed-size copy
    exists, before inference and encoding.

    Args:
        large_decode_lock: held while an image that has no reduced decode (a PNG above ``work_pixels``) is decoded
            at full size and shrunk, so that only one such decode (about 10 bytes a pixel for a moment) runs at a
            time; ``None``: no lock.

    Raises:
        UploadError: the upload is refused (see :func:`~scunext.serve.upload.decode_upload`).
    """
    big = large_decode_lock is not None and needs_full_decode(data, work_pixels)
    with large_decode_lock if big else nullcontext():
        upload = decode_upload(data, max_pixels=max_pixels, work_pixels=work_pixels)
        work, size, spacing = _shrink(upload.image, work_pixels), upload.size, upload.pixel_spacing_mm
        del upload
    return _answer(model, work, size, spacing, display_side)


def segment_image(model: ServedModel, image: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    """:func:`segment` for an image already decoded at its native size (no pixel spacing)."""
    return segment(model, DecodedUpload(image, "array", image.shape[:2]), **kwargs)
