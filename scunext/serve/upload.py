"""Checking and decoding an uploaded image held in memory.

An upload is treated as hostile: it is recognised by its magic bytes only (PNG or JPEG, whatever its declared
content type or file name), then decoded by :func:`scunext.data.read_image`, which applies the project's pixel cap
(decompression-bomb guard) and turns corrupt or truncated data into :class:`~scunext.data.DataError`. Every
refusal becomes an :class:`UploadError` with a one-line message and an HTTP status.

``read_image`` decodes the bytes in memory: nothing is written to disk.
"""

from __future__ import annotations

import logging

import numpy as np

from scunext.data import MAX_IMAGE_PIXELS, DataError, read_image
from scunext.data.io import BYTES_LABEL

__all__ = ["UploadError", "sniff_format", "decode_upload", "ACCEPTED_FORMATS"]

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
    (b"DICM", "a DICOM file"),
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
    """``"png"`` or ``"jpeg"`` from the leading magic bytes, ``None`` for anything else."""
    for name, magic in ACCEPTED_FORMATS.items():
        if data.startswith(magic):
            return name
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
    text = text.replace("; pass a larger max_pixels if genuine", "")
    return f"cannot use this image: {text}"


def decode_upload(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """Check and decode an uploaded PNG or JPEG.

    Args:
        data: the uploaded file's bytes.
        max_pixels: refuse images with more than this many pixels (width x height), before decoding them.

    Returns:
        ``(image, format)``: the ``uint8`` image, ``(H, W)`` or ``(H, W, 3)``, exactly as
        :func:`scunext.data.read_image` returns it for the same file, and ``"png"`` or ``"jpeg"``.

    Raises:
        UploadError: empty data (400), not a PNG or JPEG (415), too many pixels, corrupt or truncated (422).
    """
    if not data:
        raise UploadError("the file is empty (0 bytes)", 400)
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(f"not a PNG or JPEG file (it looks like {_describe(data)}); upload a PNG or JPEG image", 415)
    try:
        image = read_image(data, max_pixels=max_pixels)
    except DataError as exc:
        log.info("upload refused: %s", exc)
        raise UploadError(_user_message(exc), 422) from None
    return image, fmt
