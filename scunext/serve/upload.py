"""Checking and decoding an uploaded image held in memory.

An upload is treated as hostile: it is recognised by its magic bytes only (PNG, JPEG, or DICOM by the ``DICM``
preamble at byte 128, whatever its declared content type or file name), then decoded by
:func:`scunext.data.read_image`, which applies the project's pixel cap
(decompression-bomb guard) and turns corrupt or truncated data into :class:`~scunext.data.DataError`. Every
refusal becomes an :class:`UploadError` with a one-line message and an HTTP status.

``read_image`` decodes the bytes in memory: nothing is written to disk. A large JPEG is decoded at a reduced
scale (Pillow's draft mode); its native size comes from the header.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from scunext.data import MAX_IMAGE_PIXELS, DataError, read_image
from scunext.data.io import BYTES_LABEL, read_image_info

__all__ = [
    "UploadError",
    "DecodedUpload",
    "sniff_format",
    "decode_upload",
    "needs_full_decode",
    "fit_size",
    "ACCEPTED_FORMATS",
]

log = logging.getLogger(__name__)

#: accepted formats and their magic bytes
ACCEPTED_FORMATS: dict[str, bytes] = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}

# Formats recognised only to give a precise refusal message.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"PK\x03\x04", "a ZIP archive"),
)


class UploadError(ValueError):
    """An upload that is refused; ``str(exc)`` is one line to show the user.

    Attributes:
        status: the HTTP status to answer with (400 empty/missing, 413 too large, 415 wrong type, 422 undecodable).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def sniff_format(data: bytes) -> str | None:
    """``"png"`` or ``"jpeg"`` from the leading magic bytes, ``"dicom"`` from the ``DICM`` preamble at byte 128,
    ``None`` for anything else."""
    for name, magic in ACCEPTED_FORMATS.items():
        if data.startswith(magic):
            return name
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def _describe(data: bytes) -> str:
    """A short guess at what a refused file is, for the error message."""
    for magic, what in _OTHER_FORMATS:
        if data.startswith(magic):
            return what
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[4:8] == b"ftyp":
        return "an HEIC/AVIF image or a video"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "an unknown binary format"
    return "text"


def _user_message(exc: DataError) -> str:
    """The DataError's first line, without the data label, worded for a web user."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable image"
    if text.startswith(BYTES_LABEL):
        text = text[len(BYTES_LABEL) :].lstrip(": ")
    text = text.replace("; if genuine, downscale it (in Python: a larger max_pixels)", "")
    return f"cannot use this image: {text}"


@dataclass(frozen=True)
class DecodedUpload:
    """A checked and decoded upload.

    Attributes:
        image: the ``uint8`` pixels, ``(h, w)`` or ``(h, w, 3)``; smaller than ``size`` when a large JPEG was
            decoded at a reduced scale, otherwise exactly what :func:`scunext.data.read_image` returns.
        format: ``"png"``, ``"jpeg"`` or ``"dicom"``.
        size: the native ``(H, W)`` from the file's header.
        pixel_spacing_mm: ``(row, col)`` spacing in mm when the file records one (DICOM PixelSpacing or
            ImagerPixelSpacing), else ``None`` (PNG and JPEG).
    """

    image: np.ndarray
    format: str
    size: tuple[int, int]
    pixel_spacing_mm: tuple[float, float] | None = None

    @property
    def reduced(self) -> bool:
        """Whether ``image`` is smaller than the native size (a JPEG decoded in draft mode)."""
        return self.image.shape[:2] != self.size


def fit_size(size: tuple[int, int], *, max_pixels: int | None = None, max_side: int | None = None) -> tuple[int, int]:
    """The largest ``(h, w)`` with the aspect ratio of ``size`` within the limits (``size`` itself if it fits)."""
    h, w = size
    scale = 1.0
    if max_pixels is not None and h * w > max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (h * w)))
    if max_side is not None and max(h, w) > max_side:
        scale = min(scale, max_side / max(h, w))
    if scale >= 1.0:
        return h, w
    nh, nw = max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
    # a side that rounds up to 1 pixel (a 50,000,000 x 1 image) must not take the other side past the limits
    if max_pixels is not None and nh * nw > max_pixels:
        nh, nw = (nh, max(1, max_pixels // nh)) if nh <= nw else (max(1, max_pixels // nw), nw)
    if max_side is not None:
        nh, nw = min(nh, max_side), min(nw, max_side)
    return nh, nw


def _header(data: bytes) -> tuple[tuple[int, int], tuple[float, float] | None] | None:
    """Native ``(H, W)`` and pixel spacing (DICOM only) from the header (:func:`scunext.data.io.read_image_info`, no
    pixel decode); ``None`` when the header cannot be read (:func:`read_image` then refuses the data with the
    precise reason)."""
    try:
        info = read_image_info(data)
    except DataError:
        return None
    return info.size, info.pixel_spacing_mm


def needs_full_decode(data: bytes, work_pixels: int) -> bool:
    """Whether :func:`decode_upload` will decode ``data`` at full size with more than ``work_pixels`` pixels: a PNG
    (or anything but a JPEG, which has a cheap reduced decode) larger than that, by its header."""
    if sniff_format(data) == "jpeg":
        return False
    header = _header(data)
    return header is not None and header[0][0] * header[0][1] > work_pixels


def decode_upload(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, work_pixels: int | None = None) -> DecodedUpload:
    """Check and decode an uploaded PNG, JPEG or DICOM image.

    Args:
        data: the uploaded file's bytes.
        max_pixels: refuse images with more than this many pixels (width x height, the native size from the
            header), before decoding them.
        work_pixels: the most pixels the caller will use. A JPEG with more is decoded at the smallest JPEG scale
            (1/2, 1/4, 1/8) whose sides stay at least those of the image scaled down to ``work_pixels`` (the
            ``draft_size`` of :func:`scunext.data.read_image`). ``None``: always decoded at full size.

    Returns:
        The :class:`DecodedUpload`.

    Raises:
        UploadError: empty data (400), not a PNG, JPEG or DICOM (415), too many pixels, corrupt or truncated (422).
    """
    if not data:
        raise UploadError("the file is empty (0 bytes)", 400)
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(
            f"not a PNG, JPEG or DICOM file (it looks like {_describe(data)}); upload a PNG, JPEG or DICOM image", 415
        )
    header = _header(data)
    draft_size = None
    if header is not None and work_pixels is not None and header[0][0] * header[0][1] > work_pixels:
        draft_size = min(fit_size(header[0], max_pixels=work_pixels))
    try:
        image = read_image(data, max_pixels=max_pixels, draft_size=draft_size)
    except DataError as exc:
        log.info("upload refused: %s", exc)
        raise UploadError(_user_message(exc), 422) from None
    size, spacing = header if header is not None else (image.shape[:2], None)
    return DecodedUpload(image, fmt, size, spacing)
