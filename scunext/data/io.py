"""Safe reading of images and binary masks with Pillow.

Every problem with a file (missing, not an image, corrupt or truncated, too many pixels, a mask that is not
binary) raises :class:`~scunext.data.errors.DataError` with a one-line message naming the file.

Conversions done by :func:`read_image` (the returned array is always ``uint8``):

============================  ===============================================================================
file mode (Pillow)            result
============================  ===============================================================================
``L`` (8-bit gray)            ``(H, W)`` unchanged
``1`` (1-bit)                 ``(H, W)`` with values {0, 255}
``I;16*`` / ``I`` (16/32-bit) ``(H, W)``, scaled to 8 bits, see ``scale16`` below
``LA`` (gray + alpha)         ``(H, W)``, composited on black: ``round(L * A / 255)``
``RGB``                       ``(H, W, 3)`` unchanged (16-bit-per-channel RGB PNGs are reduced by Pillow itself)
``RGBA``                      ``(H, W, 3)``, composited on black: ``round(RGB * A / 255)``
``P`` (palette)               ``(H, W, 3)`` through the palette; with a transparent index, composited on black
``CMYK``, ``YCbCr``, others   ``(H, W, 3)`` via Pillow's ``convert("RGB")``
``F`` (float)                 refused: :class:`DataError` (the intended intensity range is unknown)
============================  ===============================================================================

Compositing on black equals dropping the alpha channel wherever the image is opaque (alpha 255), which is the usual
case for medical images saved with an alpha channel; fully transparent pixels become 0. EXIF orientation tags are
*not* applied: pixels are returned in stored order, the same order as a mask drawn on the raw pixel grid (a warning
is logged when a file carries a rotation tag). A TIFF with an orientation tag of 2-8 is refused, because
Pillow applies that tag itself on decode. 16-bit gray images using only the low 12 bits, and files with several
frames (only the first is read), are read with a warning. Each kind of warning is given once per process (later
files at debug level).

DICOM sources (a ``.dcm`` path, or any file or bytes with ``DICM`` at byte 128) are decoded by
:mod:`scunext.data.dicom` (modality LUT, VOI LUT or window, MONOCHROME1 inverted, then to ``uint8``; see there).
:func:`read_image_info` reads only the header of any supported file: size, channels, format, pixel spacing.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from scunext.data import dicom
from scunext.data.errors import DataError

__all__ = ["MAX_IMAGE_PIXELS", "PILLOW_MAX_PIXELS", "ImageInfo", "area_mm2", "read_image", "read_image_info",
           "read_mask", "format_values"]

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS: int = 50_000_000
"""Default pixel cap (width x height) of :func:`read_image` / :func:`read_mask`, about 50 megapixels.

Larger files are refused as possible decompression bombs. Pillow's hard limit (twice
``PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP: :data:`PILLOW_MAX_PIXELS`) still applies on top of this one, as a
:class:`DataError`; Pillow's warning above its own limit is not used (``max_pixels`` decides).
"""

PILLOW_MAX_PIXELS: int = 2 * (Image.MAX_IMAGE_PIXELS or 2**61)
"""The largest image Pillow opens (it raises ``DecompressionBombError`` above twice ``PIL.Image.MAX_IMAGE_PIXELS``):
a ``max_pixels`` above it cannot admit more for PNG, JPEG, TIFF, ... (DICOM is not read by Pillow)."""

_EXIF_ORIENTATION = 0x0112
_LOW_BITS_MAX = 4095  # a 16-bit gray image whose maximum is at most this holds 12 bits or fewer
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

PathLike = str | os.PathLike[str]


def _reason(exc: BaseException) -> str:
    """First line of an exception message, or its type name when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def format_values(values: np.ndarray, limit: int = 8) -> str:
    """Short text for a sorted array of distinct values, e.g. ``[0, 3, 127, ..., 255] (12 distinct)``."""
    vals = [int(v) if float(v).is_integer() else float(v) for v in np.asarray(values).ravel()]
    if len(vals) <= limit:
        shown = ", ".join(str(v) for v in vals)
    else:
        shown = ", ".join(str(v) for v in vals[: limit - 2]) + ", ..., " + ", ".join(str(v) for v in vals[-2:])
    return f"[{shown}] ({len(vals)} distinct)"


#: how an image given as bytes (an upload) is named in error messages
BYTES_LABEL = "image data"


#: the kinds of read_image warning already given in this process (a training epoch reads every image again, and a
#: folder of 1,000 files with the same property needs one warning, not 1,000); later ones are logged at debug level
_WARNED: set[str] = set()


def _warn_once(kind: str, message: str, *args: Any) -> None:
    if kind in _WARNED:
        logger.debug(message, *args)
        return
    _WARNED.add(kind)
    logger.warning(message + " (said once; later files like it are logged at debug level, -v)", *args)


def _frames(im: Image.Image) -> int:
    """Frames in the file; 1 when Pillow cannot count them (a TIFF whose next-page pointer is broken raises
    TypeError there, while its first page reads fine)."""
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except (TypeError, ValueError, OSError, EOFError, struct.error):
        return 1


def _float_refusal(path: object) -> str:
    return f"{path}: floating-point images are not supported (unknown intensity range); save as 8/16-bit"


def _open_checked(
    source: PathLike | bytes, max_pixels: int, draft_size: int | None = None, *, decode: bool = True
) -> Image.Image:
    """Open a file (or in-memory bytes) with Pillow, refuse oversized images, and decode the pixels (unless
    ``decode`` is False: header only); raise DataError on any problem. Messages start with the path, or
    :data:`BYTES_LABEL` for bytes.

    The pixel cap applies to the size in the header (the native size), before any draft reduction. With
    ``draft_size``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose both sides stay
    ``>= draft_size`` (Pillow's draft mode); other formats are decoded in full."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        path: Path | str = BYTES_LABEL
        if len(source) == 0:
            raise DataError(f"{path}: file is empty (0 bytes)")
        opener: Any = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty (0 bytes)")
        opener = path
    with warnings.catch_warnings():
        # Pillow warns above its own limit (~89 MP) and raises above twice that. The warning is silenced: the
        # max_pixels check below refuses (with the limit the caller set), or accepts a size the caller allowed.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(opener)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{path}: refused as a possible decompression bomb ({_reason(exc)})") from exc
        except UnidentifiedImageError as exc:
            raise DataError(f"{path}: not a readable image (unknown format or corrupt header)") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: cannot open image ({_reason(exc)})") from exc
        width, height = im.size
        if width < 1 or height < 1:
            im.close()
            raise DataError(f"{path}: image has an empty size {width}x{height}")
        if width * height > max_pixels:
            im.close()
            raise DataError(
                f"{path}: image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
                f"{max_pixels / 1e6:g} megapixels (possible decompression bomb); if genuine, downscale it "
                "(in Python: a larger max_pixels)"
            )
        orientation = im.tag_v2.get(_EXIF_ORIENTATION, 1) if im.format == "TIFF" else 1
        if orientation in range(2, 9):  # the values Pillow transposes (0 and 9+ are invalid and left alone)
            im.close()  # Pillow rotates a TIFF on decode (and scrambles rotated uncompressed strips): not stored order
            raise DataError(f"{path}: TIFF orientation tag {orientation} (stored rotated or flipped) is not supported: "
                            "the pixels would not come back in stored order as for every other format; re-save the "
                            "image without the tag (e.g. as PNG)")  # fmt: skip
        if not decode:
            return im
        if draft_size is not None and im.format == "JPEG":
            im.draft(None, (draft_size, draft_size))
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            im.close()
            raise DataError(f"{path}: refused as a possible decompression bomb ({_reason(exc)})") from exc
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            im.close()
            raise DataError(f"{path}: corrupt or truncated image data ({_reason(exc)})") from exc
    return im


def _composite_on_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round(colour * alpha / 255)`` in uint8; ``alpha`` is (H, W), ``colour`` is (H, W) or (H, W, C)."""
    a = alpha.astype(np.uint16)
    if colour.ndim == 3:
        a = a[..., None]
    return ((colour.astype(np.uint16) * a + 127) // 255).astype(np.uint8)


def _is_32_bit_tiff(im: Image.Image) -> bool:
    """A TIFF that declares 32 bits per sample (an integer container with no bit depth of its data). Other files
    that open as mode ``I`` declare 16 bits (Pillow before 10.x opened 16-bit PNG as ``I``)."""
    bits = im.tag_v2.get(258, ()) if im.format == "TIFF" else ()
    return 32 in (bits if isinstance(bits, tuple) else (bits,))


def _fits_8_bits(arr: np.ndarray) -> bool:
    return bool(arr.size) and int(arr.min()) >= 0 and int(arr.max()) <= 255


def _scale_16bit(arr: np.ndarray, path: Path, scale16: str) -> np.ndarray:
    """Map a 16-bit (or 32-bit int holding 16-bit) gray array to uint8."""
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise DataError(
            f"{path}: integer image has values outside 0..65535 (min {int(arr.min())}, max {int(arr.max())}); "
            "convert it to 8- or 16-bit first"
        )
    arr = arr.astype(np.uint32)
    if scale16 == "full":
        return ((arr + 128) // 257).astype(np.uint8)  # round(v / 257): 0 -> 0, 65535 -> 255
    peak = int(arr.max()) if arr.size else 0
    if peak == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.floor(arr.astype(np.float64) * (255.0 / peak) + 0.5).astype(np.uint8)


def read_image(
    path: PathLike | bytes,
    *,
    scale16: Literal["full", "max"] = "full",
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
) -> np.ndarray:
    """Read an image file as ``uint8``: ``(H, W)`` for grayscale sources, ``(H, W, 3)`` for colour ones.

    See the module docstring for the conversion of every Pillow mode. Only the first frame of multi-frame files
    (TIFF, GIF) is read.

    Args:
        path: image file (any format Pillow reads: PNG, JPEG, BMP, TIFF, ...; or DICOM, see
            :mod:`scunext.data.dicom`), or the file's bytes (an upload; messages then name it :data:`BYTES_LABEL`).
        scale16: (not DICOM) how 16-bit grayscale is brought to 8 bits. ``"full"`` (default) maps the full 16-bit range,
            ``round(v / 257)``, so 65535 -> 255 and intensities stay comparable between images. ``"max"`` stretches
            ``[0, image max]`` to ``[0, 255]``, ``round(v * 255 / max)``: use it for 10/12-bit data stored in a
            16-bit container, which ``"full"`` would leave very dark.
        max_pixels: refuse images with more than this many pixels (width x height), counted at the native size
            given by the header, before decoding.
        draft_size: for a JPEG, decode at the smallest JPEG scale (1/2, 1/4 or 1/8) whose both sides stay
            ``>= draft_size`` (Pillow's draft mode, much cheaper than a full decode); the returned array is then
            smaller than the file, and the caller reads the native size from the header. ``None`` (default) and
            every other format: decoded at full size.

    Returns:
        A C-contiguous ``uint8`` array, ``(H, W)`` or ``(H, W, 3)``.

    Raises:
        DataError: missing, empty, unreadable, corrupt or truncated file; too many pixels; unsupported mode;
            for DICOM also no image, multi-frame, unsupported bit depth, or a compressed transfer syntax whose
            decoder is not installed (:class:`~scunext.data.dicom.DicomDecoderMissingError`, which names the
            ``pip install`` command).
        ValueError: a bad ``scale16`` or ``draft_size`` value.
    """
    if scale16 not in ("full", "max"):
        raise ValueError(f"scale16 must be 'full' or 'max', got {scale16!r}")
    if draft_size is not None and draft_size < 1:
        raise ValueError(f"draft_size must be >= 1, got {draft_size}")
    if dicom.is_dicom(path):  # DICOM ignores draft_size
        return dicom.read_dicom(path, max_pixels=max_pixels, label=_label(path))
    im = _open_checked(path, max_pixels, draft_size)
    path = Path(path) if not isinstance(path, (bytes, bytearray, memoryview)) else BYTES_LABEL
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation not in (1, None):
            _warn_once("orientation", "%s: EXIF orientation %s ignored; pixels are read in stored order", path,
                       orientation)  # fmt: skip
        frames = _frames(im)
        if frames > 1 and im.format != "MPO":  # (a phone JPEG's second picture is a preview, not a page)
            _warn_once("frames", "%s: %d frames (multi-page or animated); only the first is read", path, frames)
        mode = im.mode
        if mode == "L":
            out = np.array(im, dtype=np.uint8)
        elif mode == "1":
            out = np.array(im.convert("L"), dtype=np.uint8)
        elif mode == "I" and _is_32_bit_tiff(im) and _fits_8_bits(arr := np.array(im)):
            # a 32-bit container declares no bit depth; values that all fit 0..255 are 8-bit data (scaled as
            # 16-bit they would read as an almost black image)
            out = arr.astype(np.uint8)
        elif mode in _GRAY16_MODES:
            arr = np.array(im)
            if scale16 == "full" and arr.size and 0 < int(arr.max()) <= _LOW_BITS_MAX:
                _warn_once("low bits", "%s: 16-bit image whose values use only the low 12 bits (max %d): read on "
                           "the full 16-bit range it is nearly black (%d gray levels); if it holds 10/12-bit data, "
                           "convert it to 8 bits on its own range first (in Python: read_image(..., scale16='max'))",
                           path, int(arr.max()), (int(arr.max()) + 128) // 257 + 1)  # fmt: skip
            out = _scale_16bit(arr, path, scale16)
        elif mode in ("LA", "La"):
            la = np.array(im.convert("LA"), dtype=np.uint8)
            out = _composite_on_black(la[..., 0], la[..., 1])
        elif mode == "RGB":
            out = np.array(im, dtype=np.uint8)
        elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
            out = _composite_on_black(rgba[..., :3], rgba[..., 3])
        elif mode == "F":
            raise DataError(_float_refusal(path))
        else:
            try:
                out = np.array(im.convert("RGB"), dtype=np.uint8)
            except (ValueError, OSError) as exc:
                raise DataError(f"{path}: unsupported image mode {mode!r} ({_reason(exc)})") from exc
    finally:
        im.close()
    return np.ascontiguousarray(out)


def _label(source: PathLike | bytes) -> str:
    return BYTES_LABEL if isinstance(source, (bytes, bytearray, memoryview)) else str(Path(source))


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says about the image :func:`read_image` would return; no pixel is decoded.

    Attributes:
        size: ``(height, width)`` in pixels.
        channels: channels of :func:`read_image`'s result: 1 for ``(H, W)``, 3 for ``(H, W, 3)``.
        format: ``"png"``, ``"jpeg"``, ``"dicom"``, ... (Pillow's format name in lower case for non-DICOM).
        pixel_spacing_mm: ``(row, column)`` spacing in mm: DICOM Pixel Spacing, else Imager Pixel Spacing, else
            ``None``; always ``None`` for non-DICOM files (their DPI is not a physical spacing).
        is_dicom: the source is DICOM.
        sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid: DICOM identifiers, to reference
            the source (e.g. in a DICOM SEG); ``None`` for non-DICOM files.
        frames: number of frames in the file (:func:`read_image` refuses DICOM with more than one and reads only
            the first of other formats).
    """

    size: tuple[int, int]
    channels: int
    format: str
    pixel_spacing_mm: tuple[float, float] | None = None
    is_dicom: bool = False
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frames: int = 1

    @property
    def pixels(self) -> int:
        """``height * width``."""
        return self.size[0] * self.size[1]


_ONE_CHANNEL_MODES = ("L", "1", "LA", "La", "F", *_GRAY16_MODES)


def read_image_info(source: PathLike | bytes) -> ImageInfo:
    """Read a file's header only (no pixel decode): size, channels, format and, for DICOM, spacing and UIDs.

    Cheap enough to check many inputs up front. It does not apply ``max_pixels`` (compare ``info.pixels``
    yourself), but Pillow still refuses headers above its own limit (about 179 megapixels) as a DataError.

    Raises:
        DataError: missing, empty or unreadable file, or a corrupt header.
    """
    label = _label(source)
    if dicom.is_dicom(source):
        head = dicom.read_dicom_header(source, label=label)
        return ImageInfo(
            size=(head.rows, head.columns),
            channels=3 if head.samples_per_pixel == 3 else 1,
            format="dicom",
            pixel_spacing_mm=head.pixel_spacing_mm,
            is_dicom=True,
            sop_class_uid=head.sop_class_uid or None,
            sop_instance_uid=head.sop_instance_uid or None,
            study_instance_uid=head.study_instance_uid or None,
            series_instance_uid=head.series_instance_uid or None,
            frames=head.frames,
        )
    im = _open_checked(source, max_pixels=2**62, decode=False)
    try:
        if im.mode == "F":  # refused here as read_image would, so that a header check finds it before any output
            raise DataError(_float_refusal(label))
        width, height = im.size
        channels = 1 if im.mode in _ONE_CHANNEL_MODES else 3
        fmt = (im.format or "unknown").lower()
        frames = _frames(im)
    finally:
        im.close()
    return ImageInfo(size=(height, width), channels=channels, format=fmt, frames=frames)


def area_mm2(area_px: float, spacing: tuple[float, float] | None) -> float | None:
    """Area in mm² of ``area_px`` pixels at ``spacing = (row, column)`` mm; ``None`` when ``spacing`` is None.

    Example: ``area_mm2(1000, (0.2, 0.25)) == 50.0``.
    """
    if spacing is None:
        return None
    row, col = spacing
    return float(area_px) * float(row) * float(col)


def _distinct(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    return np.unique(arr)


def _palette_values(im: Image.Image) -> np.ndarray:
    """A palette mask's pixels as gray levels when every colour it uses is gray, else as palette indices."""
    index = np.array(im, dtype=np.uint8)
    palette = im.getpalette()
    if not palette:
        return index
    colours = np.array(palette, dtype=np.uint8).reshape(-1, 3)
    used = np.unique(index)
    if used.max() >= len(colours):
        return index
    rgb = colours[used]
    if np.array_equal(rgb[:, 0], rgb[:, 1]) and np.array_equal(rgb[:, 0], rgb[:, 2]):
        return colours[:, 0][index]
    return index


def _refuse_mask_in_alpha(path: Path, colour: np.ndarray, alpha: np.ndarray) -> None:
    """A mask whose colour is one value everywhere while its alpha channel varies holds its shape in the alpha
    channel, which :func:`read_mask` ignores: read as colour it would be all background (or all foreground)."""
    if colour.size and int(colour.min()) == int(colour.max()) and int(alpha.min()) != int(alpha.max()):
        raise DataError(f"{path}: mask colour is {int(colour.flat[0])} everywhere and only its alpha channel varies: "
                        "the mask seems to be stored in the alpha channel, which is not read; save it as a "
                        "single-channel 8-bit PNG with values {0, 255}")  # fmt: skip


def read_mask(path: PathLike, threshold: bool = False, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read a binary mask file as a ``bool`` array ``(H, W)``; ``True`` is foreground.

    Accepted without ``threshold``: values within {0, 1} or within {0, 255} (for 16-bit files also {0, 65535}),
    which includes all-background and all-foreground masks; anything > 0 is foreground. Any other set of values
    raises :class:`DataError` listing the values found, unless ``threshold=True``, which binarises at half the
    type's range: ``>= 128`` for 8-bit files, ``>= 32768`` for 16-bit ones (use it for anti-aliased or
    JPEG-damaged masks).

    Mode handling: ``1`` is used as is; ``L``, ``I;16``/``I`` by value; palette (``P``) masks by the palette's
    *gray level* when every colour used is gray (a binary mask saved as a palette image, where the encoder may put
    white at index 0: read by index it would be inverted), else by palette *index* (a coloured label map, index 0 =
    background); ``LA`` by its gray channel (alpha ignored); ``RGB``/``RGBA`` only when the
    three colour channels are equal everywhere (alpha ignored), otherwise DataError. An ``LA``/``RGBA`` mask whose
    colour is one value everywhere while its alpha varies (the shape kept in alpha) is refused. Float masks are
    refused.

    Args:
        path: mask file, normally a PNG.
        threshold: binarise non-binary masks instead of refusing them.
        max_pixels: refuse masks with more than this many pixels.

    Returns:
        A ``bool`` array of shape ``(H, W)``.

    Raises:
        DataError: unreadable file, colour or float mask, a mask kept in the alpha channel, or non-binary values
            without ``threshold``.
    """
    if not isinstance(threshold, (bool, np.bool_)):  # threshold=200 or 0.5 was taken as True (binarised at 128)
        raise ValueError(f"threshold must be True or False (binarise at half the value range), got {threshold!r}")
    path = Path(path)
    im = _open_checked(path, max_pixels)
    try:
        mode = im.mode
        if mode == "1":
            return np.array(im, dtype=bool)
        if mode == "P":
            arr = _palette_values(im)
        elif mode == "L":
            arr = np.array(im, dtype=np.uint8)
        elif mode in _GRAY16_MODES:
            arr = np.array(im)
        elif mode in ("LA", "La"):
            la = np.array(im.convert("LA"), dtype=np.uint8)
            _refuse_mask_in_alpha(path, la[..., 0], la[..., 1])
            arr = la[..., 0]
        elif mode in ("RGB", "RGBA", "RGBX", "RGBa"):
            if mode in ("RGBA", "RGBa"):
                rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
                _refuse_mask_in_alpha(path, rgba[..., :3], rgba[..., 3])
            rgb = np.array(im.convert("RGB"), dtype=np.uint8)
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise DataError(
                    f"{path}: colour mask (mode {mode}, the R, G and B channels differ); save binary masks as "
                    "single-channel 8-bit PNGs with values {0, 255}"
                )
            arr = rgb[..., 0]
        else:
            raise DataError(f"{path}: unsupported mask mode {mode!r}; save masks as single-channel 8-bit PNGs")
    finally:
        im.close()

    values = _distinct(arr)
    present = {int(v) for v in values}
    full = 255 if arr.dtype == np.uint8 else 65535
    if present <= {0, 1} or present <= {0, 255} or present <= {0, full}:
        return arr > 0
    if threshold:
        out = arr >= (full + 1) // 2
        if not out.any() and present - {0}:
            raise DataError(f"{path}: binarising at >= {(full + 1) // 2} (--threshold-masks) leaves this mask empty, "
                            f"but it holds values {format_values(values)}: a label map, or a mask in the low values "
                            "of a 16-bit file? Save masks as {0, 255}")  # fmt: skip
        return out
    raise DataError(
        f"{path}: mask is not binary, values {format_values(values)}; expected {{0, 1}} or {{0, 255}} "
        f"(binarise at >= {(full + 1) // 2} with --threshold-masks; in Python threshold=True / threshold_masks=True)"
    )
