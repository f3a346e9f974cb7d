"""Reading DICOM images with pydicom: recognition, header-only information and decoding to ``uint8``.

:func:`scunext.data.io.read_image` and :func:`scunext.data.io.read_image_info` dispatch here for DICOM sources; use
those two, not this module, from the rest of the package.

A source is DICOM when its bytes 128-131 are ``b"DICM"`` (the DICOM Part 10 preamble), or when a path ends in
``.dcm`` (case-insensitive; such a file must then carry the preamble). Decoding, in this order (DICOM PS3.3
C.11, the grayscale pipeline):

1. checks from the header, before any pixel is decoded: the file holds an image (Pixel Data present, not a
   Segmentation), a single frame, 8- or 16-bit allocated and at most 16 bits stored, one (grayscale) or three
   (colour, 8-bit) samples per pixel, ``Rows * Columns <= max_pixels``, and a decoder for its transfer syntax;
2. the stored values, decoded by pydicom (compressed transfer syntaxes through pydicom's optional decoders);
3. grayscale only: the **modality LUT** (Rescale Slope/Intercept or a Modality LUT Sequence,
   ``pydicom.pixels.apply_modality_lut``);
4. grayscale only: the **VOI LUT** (``pydicom.pixels.apply_voi_lut``, first item): a VOI LUT Sequence when there
   is one, else the first Window Center/Width (with its VOI LUT Function: LINEAR, LINEAR_EXACT or SIGMOID);
5. grayscale only: to ``uint8`` with ``floor(255 * (v - lo) / (hi - lo) + 0.5)``, where ``[lo, hi]`` is

   * with a window: the window function's output range, so the window maps onto 0..255 (values at or below the
     window's bottom give 0, at or above its top 255); for the default LINEAR function that is
     ``255 * clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)`` on the modality output ``x``;
   * with a VOI LUT Sequence: the LUT's output range ``[0, 2**bits - 1]`` (``bits`` from its LUT Descriptor);
   * with neither: the image's own minimum and maximum after the modality LUT (a constant image gives all 0);

6. ``MONOCHROME1`` (0 is white) is inverted, ``255 - v``, so that the result is always 0 = black.

Colour images (``RGB``, ``YBR_*``, 8 bits) are returned as RGB ``(H, W, 3)`` (pydicom converts YBR to RGB);
``PALETTE COLOR`` and colour with more than 8 bits are refused. The Presentation LUT Shape is not applied
separately: the IODs that use it (DX, MG, IO) require it to agree with the photometric interpretation.

Every problem raises :class:`~scunext.data.errors.DataError` with a one-line message naming the file; a compressed
file whose decoder is not installed raises :class:`DicomDecoderMissingError`, which is both a ``DataError`` and a
:class:`~scunext.errors.MissingDependencyError` and names the packages to ``pip install``. That includes a file cut
short before its Pixel Data (pydicom reads such a file without complaint, as a header missing everything after the
cut), and a Rescale Slope/Intercept or window whose result is not finite (NaN or infinite values would otherwise
become an all-black image that is segmented as if it were real). pydicom's own log records and numpy's warnings
about such files are kept out of the output: the ``DataError`` is the one report.

The pixel spacing (:attr:`DicomHeader.pixel_spacing_mm`) is Pixel Spacing, else Imager Pixel Spacing; a value that
is malformed, not finite, or outside :data:`SPACING_RANGE_MM` is ignored with a logged warning (the next attribute,
or no spacing, is used), so a damaged spacing never yields an area of 0 mm² or infinity.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from scunext.data.errors import DataError
from scunext.errors import MissingDependencyError

__all__ = [
    "DICOM_EXTENSIONS",
    "SPACING_RANGE_MM",
    "DicomDecoderMissingError",
    "DicomHeader",
    "has_dicom_preamble",
    "is_dicom",
    "read_dicom",
    "read_dicom_header",
]

logger = logging.getLogger(__name__)

DICOM_EXTENSIONS: tuple[str, ...] = (".dcm",)
"""File extensions always read as DICOM (case-insensitive)."""

SPACING_RANGE_MM: tuple[float, float] = (1e-4, 100.0)
"""The pixel spacings (mm per pixel, each of row and column) taken as physical: 0.1 µm (beyond light microscopy) to
10 cm (coarser than any imaging modality). A value outside it can only be a damaged or mistyped header, and would
turn a mask's area into nonsense (up to infinity for ``1e300``), so it is ignored like a negative spacing."""

_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
#: the file meta information starts after the preamble and magic; its first element, the group length (12 bytes
#: in the explicit VR little endian of every file meta), gives the length of the rest
_META_START = _MAGIC_OFFSET + 4 + 12
_PIXEL_GROUP = 0x7FE0

#: SOP classes that carry Pixel Data but are not images to segment
_NOT_IMAGES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM Segmentation (SEG)",
    "1.2.840.10008.5.1.4.1.1.66.7": "a DICOM Label Map Segmentation",
}
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")

#: pip names of modules that pydicom's missing-dependency texts name differently
_PIP_NAMES: dict[str, str] = {"gdcm": "python-gdcm"}
#: the plugins to suggest first (pure pip wheels, permissive licences first)
_PLUGIN_ORDER = ("pylibjpeg", "pyjpegls", "pillow", "gdcm")

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


class DicomDecoderMissingError(DataError, MissingDependencyError):
    """A compressed DICOM file whose transfer syntax needs a decoder package that is not installed.

    It is a :class:`DataError` (the file cannot be read here) and a :class:`MissingDependencyError` (installing
    the named package fixes it); the message is one line with the ``pip install`` command.
    """


@dataclass(frozen=True)
class DicomHeader:
    """What the header of a DICOM file says, without decoding any pixel.

    Attributes:
        rows: Rows (0 when absent).
        columns: Columns (0 when absent).
        samples_per_pixel: 1 for grayscale, 3 for colour.
        photometric: Photometric Interpretation, e.g. ``"MONOCHROME2"``.
        frames: Number of Frames (1 when absent).
        has_pixels: Pixel Data (7FE0,0010) is present.
        pixel_spacing_mm: ``(row, column)`` spacing from Pixel Spacing, else Imager Pixel Spacing, else ``None``.
        sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid: identifiers ("" when absent).
        transfer_syntax_uid: the file's transfer syntax ("" when absent).
        modality: Modality ("" when absent).
    """

    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    frames: int
    has_pixels: bool
    pixel_spacing_mm: tuple[float, float] | None
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    modality: str


def _reason(exc: BaseException) -> str:
    """The first line of a library's error, without Python object reprs (``<_io.BytesIO object at 0x7f...>``: a
    memory address means nothing to a user and must not reach a web client)."""
    text = str(exc).strip().splitlines()
    return _OBJECT_REPR.sub("the data", text[0]) if text else type(exc).__name__


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _as_bytes(source: Source) -> bytes | None:
    return bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else None


def has_dicom_preamble(source: Source) -> bool:
    """True when bytes 128-131 of the file (or bytes) are ``b"DICM"``; False for a missing or unreadable file."""
    data = _as_bytes(source)
    if data is not None:
        return data[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] == _MAGIC
    try:
        with open(source, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(_MAGIC_OFFSET)
            return fh.read(4) == _MAGIC
    except OSError:
        return False


def is_dicom(source: Source) -> bool:
    """True for bytes or an existing file with the DICOM preamble, and for an existing file named ``*.dcm``."""
    if _as_bytes(source) is None:
        path = Path(source)  # type: ignore[arg-type]
        if not path.is_file():
            return False
        if path.suffix.lower() in DICOM_EXTENSIONS:
            return True
    return has_dicom_preamble(source)


def _label(source: Source, label: str | None) -> str:
    if label is not None:
        return label
    return "image data" if _as_bytes(source) is not None else str(source)


def _dcmread(source: Source, label: str, *, header_only: bool) -> Any:
    """pydicom's Dataset for a path or bytes; DataError for a missing, empty or non-DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    data = _as_bytes(source)
    fp: str | os.PathLike[str] | BinaryIO
    if data is not None:
        size = len(data)
        fp = io.BytesIO(data)
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.is_file():
            raise DataError(f"{label}: file not found" if not path.exists() else f"{label}: not a regular file")
        size = path.stat().st_size
        fp = path
    if size == 0:
        raise DataError(f"{label}: file is empty (0 bytes)")
    # header only: values above 1 KB (the pixel data) are left unread, but their presence is still known
    kwargs: dict[str, Any] = {"defer_size": "1 KB"} if header_only else {}
    try:
        ds = pydicom.dcmread(fp, **kwargs)
    except InvalidDicomError as exc:
        raise DataError(f"{label}: not a DICOM file (no 'DICM' preamble at byte 128; {_reason(exc)})") from exc
    except Exception as exc:  # pydicom raises many types (struct.error, IndexError, ...) for a corrupt header
        raise DataError(f"{label}: corrupt DICOM header ({_reason(exc)})") from exc
    _check_not_cut(ds, size, label)
    return ds


def _check_not_cut(ds: Any, size: int, label: str) -> None:
    """Refuse a file that ends before its Pixel Data: a partial download or copy.

    pydicom reads such a file without an error: the element the file ends in gets a shortened value and every
    element after it is simply missing. Without this check a file cut in its header reads as an image of size 0x0
    (or one without Pixel Data), which names the wrong problem. A file cut inside its Pixel Data is left to the
    decoder, which reports it as truncated pixel data; until then its header is still good (sizes, UIDs).
    """
    if len(ds) == 0:  # nothing after the file meta: every DICOM data set has at least its SOP Class/Instance UIDs
        meta = getattr(ds, "file_meta", None)
        group_length = _int(meta, "FileMetaInformationGroupLength", 0) if meta is not None else 0
        where = "inside its file meta information" if size < _META_START + group_length else "after its file meta"
        raise DataError(f"{label}: truncated DICOM file ({size} bytes; it ends {where}, before any image data)")
    tag = max(ds.keys())
    if tag.group == _PIXEL_GROUP:
        return
    elem = ds.get_item(tag, keep_deferred=True)
    length, tell = getattr(elem, "length", None), getattr(elem, "value_tell", None)
    if isinstance(length, int) and isinstance(tell, int) and length != 0xFFFFFFFF and tell + length > size:
        from pydicom.datadict import keyword_for_tag

        name = f"{tag} {keyword_for_tag(tag)}".rstrip()
        raise DataError(f"{label}: truncated DICOM file ({size} bytes; it ends inside {name}, before the Pixel Data)")


def _checked_header(ds: Any, label: str, *, spacing: bool = True) -> DicomHeader:
    try:
        # values are converted from their raw bytes here, where malformed ones fail
        return _header(ds, spacing=spacing)
    except Exception as exc:
        raise DataError(f"{label}: corrupt DICOM header ({_reason(exc)})") from exc


def _int(ds: Any, keyword: str, default: int) -> int:
    value = ds.get(keyword, None)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _spacing(ds: Any) -> tuple[float, float] | None:
    """Pixel Spacing, else Imager Pixel Spacing, each used only when both values lie in :data:`SPACING_RANGE_MM`
    (which also excludes 0, negative, NaN and infinite values)."""
    low, high = SPACING_RANGE_MM
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword, None)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            logger.warning("ignoring a malformed %s %r", keyword, value)
            continue
        if low <= row <= high and low <= col <= high:  # False for NaN
            return (row, col)
        logger.warning("ignoring a %s %r outside %g..%g mm (not a physical spacing)", keyword, value, low, high)
    return None


def _header(ds: Any, *, spacing: bool = True) -> DicomHeader:
    """The :class:`DicomHeader` of ``ds``; ``spacing=False`` leaves ``pixel_spacing_mm`` None without reading it, so
    that a caller that does not use the spacing neither pays for it nor repeats its warnings."""
    meta = getattr(ds, "file_meta", None)
    return DicomHeader(
        rows=_int(ds, "Rows", 0),
        columns=_int(ds, "Columns", 0),
        samples_per_pixel=_int(ds, "SamplesPerPixel", 1),
        photometric=str(ds.get("PhotometricInterpretation", "") or "").strip().upper(),
        frames=_int(ds, "NumberOfFrames", 1),
        has_pixels="PixelData" in ds,
        pixel_spacing_mm=_spacing(ds) if spacing else None,
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else "",
        modality=str(ds.get("Modality", "") or ""),
    )


def read_dicom_header(source: Source, *, label: str | None = None, spacing: bool = True) -> DicomHeader:
    """The header of a DICOM file or bytes, without decoding (or, for a path, reading) the pixel data.

    Args:
        source: a DICOM file path, or its bytes.
        label: how to name the source in messages (default: the path, or ``"image data"`` for bytes).
        spacing: read the pixel spacing. ``False`` leaves ``pixel_spacing_mm`` None, and logs nothing about a bad
            spacing: for callers that read a header already read (and warned about) by
            :func:`scunext.data.io.read_image_info`.

    Raises:
        DataError: missing, empty, truncated or non-DICOM file, corrupt header.
    """
    label = _label(source, label)
    return _checked_header(_dcmread(source, label, header_only=True), label, spacing=spacing)


def _check_image(ds: Any, head: DicomHeader, label: str, max_pixels: int) -> None:
    """Refuse, from the header alone, what :func:`read_dicom` cannot turn into one uint8 image."""
    if head.sop_class_uid in _NOT_IMAGES:
        raise DataError(f"{label}: {_NOT_IMAGES[head.sop_class_uid]}, not an image to segment")
    if not head.has_pixels:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DataError(f"{label}: DICOM with float pixel data is not supported (unknown intensity range)")
        sop = ds.get("SOPClassUID", None)
        what = f" ({sop.name})" if sop is not None and getattr(sop, "name", "") else ""
        raise DataError(f"{label}: DICOM file holds no image (no Pixel Data){what}")
    if head.frames > 1:
        raise DataError(f"{label}: multi-frame DICOM ({head.frames} frames) is not supported; give one frame per file")
    if head.rows < 1 or head.columns < 1:
        raise DataError(f"{label}: DICOM image has an empty size {head.columns}x{head.rows} (Columns x Rows)")
    if head.rows * head.columns > max_pixels:
        n = head.rows * head.columns
        raise DataError(
            f"{label}: image is {head.columns}x{head.rows} = {n / 1e6:.1f} megapixels, above the limit of "
            f"{max_pixels / 1e6:g} megapixels (possible decompression bomb); if genuine, downscale it "
            "(in Python: a larger max_pixels)"
        )
    allocated, stored = _int(ds, "BitsAllocated", 0), _int(ds, "BitsStored", 0)
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise DataError(
            f"{label}: DICOM with {allocated} bits allocated / {stored} stored is not supported "
            "(8 or 16 bits allocated, at most 16 stored)"
        )
    if head.samples_per_pixel == 1:
        if head.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DataError(f"{label}: unsupported photometric interpretation {head.photometric!r} for 1 sample")
    elif head.samples_per_pixel == 3:
        if head.photometric not in _COLOUR:
            raise DataError(f"{label}: unsupported photometric interpretation {head.photometric!r} for 3 samples")
        if allocated != 8:
            raise DataError(f"{label}: colour DICOM with {allocated} bits per sample is not supported (8 only)")
    else:
        raise DataError(
            f"{label}: DICOM with {head.samples_per_pixel} samples per pixel is not supported "
            "(grayscale or 8-bit RGB/YBR only)"
        )
    _check_decoder(head.transfer_syntax_uid, label)
    _check_native_length(ds, head, allocated, label)


def _check_native_length(ds: Any, head: DicomHeader, allocated: int, label: str) -> None:
    """Refuse uncompressed Pixel Data longer than Rows x Columns x samples x bytes by a whole row or more (the one
    padding byte of an odd length, or a few more, are dropped as pydicom does): a wrong Columns (511 for 512
    columns of data) read the rows out of step, a sheared image that was segmented as ``ok`` (pydicom drops the
    "excess padding" with a warning that names no file)."""
    from pydicom.uid import UID

    if head.transfer_syntax_uid and UID(head.transfer_syntax_uid).is_compressed:
        return
    data = ds.get("PixelData")
    if not isinstance(data, (bytes, bytearray)):
        return
    row = head.columns * head.samples_per_pixel * (allocated // 8)
    expected = head.rows * row
    if len(data) - expected >= max(2, row):  # a few bytes of trailing padding are read as pydicom reads them
        raise DataError(f"{label}: DICOM Pixel Data holds {len(data):,} bytes, {len(data) - expected:,} more than "
                        f"Rows x Columns = {head.rows} x {head.columns} needs ({expected:,}); the header's size does "
                        "not match the data (a wrong Rows or Columns)")  # fmt: skip


def _check_decoder(transfer_syntax: str, label: str) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    if not transfer_syntax:
        return  # no file meta: pydicom guesses the encoding and decodes it as native data
    uid = UID(transfer_syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DataError(f"{label}: unsupported DICOM transfer syntax {uid.name} ({uid})") from None
    if decoder.is_available:
        return
    packages = _pip_packages(decoder.missing_dependencies)
    command = f"pip install {packages[0]}" if packages else "install a pydicom pixel data plugin"
    others = f" (or: {', '.join('pip install ' + p for p in packages[1:])})" if len(packages) > 1 else ""
    raise DicomDecoderMissingError(
        f"{label}: DICOM compressed as {uid.name} needs a decoder that is not installed; {command}{others}"
    )


def _pip_packages(missing: list[str]) -> list[str]:
    """pip arguments, one per plugin, from pydicom's ``missing_dependencies`` texts such as
    ``"pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"`` -> ``"pylibjpeg pylibjpeg-libjpeg"``."""
    found: list[tuple[int, str]] = []
    for text in missing:
        plugin, _, needs = text.partition(" - requires ")
        plugin = plugin.strip()
        names = [re.split(r"[<>=!~ ]", part.strip(), maxsplit=1)[0] for part in re.split(r",| and ", needs)]
        names = [_PIP_NAMES.get(n, n) for n in names if n and n != "numpy"] or [_PIP_NAMES.get(plugin, plugin)]
        rank = _PLUGIN_ORDER.index(plugin) if plugin in _PLUGIN_ORDER else len(_PLUGIN_ORDER)
        found.append((rank, " ".join(names)))
    return [p for _, p in sorted(found, key=lambda t: t[0])]


def _finite(values: np.ndarray, *bounds: float) -> bool:
    """All of ``values`` and ``bounds`` are finite (integer arrays always are)."""
    return bool(np.isfinite(bounds).all()) and (values.dtype.kind in "iub" or bool(np.isfinite(values).all()))


def _present(value: Any) -> bool:
    """A header value that holds something: exports write empty Window Center/Width elements (None or ``""``)."""
    return value is not None and value != "" and not (isinstance(value, Sequence) and len(value) == 0)


def _first(value: Any) -> float:
    """The first of a multi-valued number (Window Center/Width may hold several windows), as a float."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def _values_text(ds: Any, *keywords: str) -> str:
    return ", ".join(f"{k} {ds.get(k, None)!s}" for k in keywords if k in ds)


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_level = logging.NOTSET


@contextlib.contextmanager
def _pydicom_log_quiet() -> Iterator[None]:
    """Silence pydicom's loggers (below CRITICAL) while pixel data is decoded, and restore their level after.

    When a decoder plugin fails, pydicom logs the error with its full traceback (``logger.exception``) before it
    raises; :func:`read_dicom` turns that exception into the one-line DataError that is the report, so the log
    record would only repeat it as a traceback on stderr (the DataError is raised from pydicom's exception, which
    keeps every plugin's message). Only the ``pydicom`` logger's level is changed, never logging's global
    configuration. Reentrant and thread-safe: the level is saved by the first decode to start and restored by the
    last one to end.
    """
    global _quiet_depth, _quiet_saved_level
    pydicom_logger = logging.getLogger("pydicom")
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved_level = pydicom_logger.level
            pydicom_logger.setLevel(logging.CRITICAL)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                pydicom_logger.setLevel(_quiet_saved_level)


def _decode_reason(exc: BaseException) -> str:
    """One line for a failed decode. pydicom's "Unable to decode as exceptions were raised by all available
    plugins:" says nothing about the file; the plugins' own messages (``"pillow: ..."``), on the lines after it,
    are what is kept, joined."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return _OBJECT_REPR.sub("the data", "; ".join(lines[1:]))
    return _reason(exc)


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``floor(255 * (v - lo) / (hi - lo) + 0.5)`` clipped to 0..255; all 0 when ``hi == lo``."""
    if hi == lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def _voi_to_uint8(values: np.ndarray, ds: Any, label: str, present: np.ndarray | None = None) -> np.ndarray:
    """Modality LUT, VOI LUT / window, and the mapping to uint8 (module docstring, steps 3-5), element-wise.

    ``present`` (bool, same shape as ``values``) marks which values occur in the image; the no-window min-max
    mapping uses only those. ``None`` means all of them.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    # numpy warnings off: a NaN or infinite Rescale Slope/Intercept or window (a damaged header) makes non-finite
    # values, which are refused just below with a DataError naming the attributes, instead of being warned about
    # and then cast to an all-black image. SIGMOID's exp() also overflows far from the centre, giving its limit.
    try:
        with np.errstate(all="ignore"):
            values = np.asarray(apply_modality_lut(values, ds))
            if not _finite(values):
                what = _values_text(ds, "RescaleSlope", "RescaleIntercept") or "the Modality LUT"
                raise DataError(f"{label}: corrupt DICOM rescale: {what} give non-finite pixel values")
            if _present(ds.get("RescaleSlope")) and float(ds.RescaleSlope) == 0:
                raise DataError(f"{label}: corrupt DICOM rescale: RescaleSlope 0 maps every pixel to one value (a "
                                "blank image)")  # fmt: skip
            if ds.get("VOILUTSequence"):
                if not np.issubdtype(values.dtype, np.integer):  # a LUT is indexed by integers
                    values = np.rint(np.clip(values, -(2.0**62), 2.0**62)).astype(np.int64)
                return _to_uint8(*_apply_voi_table(values, ds))
            if _present(ds.get("WindowCenter")) and _present(ds.get("WindowWidth")):  # (empty: no window)
                # the first window is the one applied; an infinite width maps every value to one grey, finite
                window = [_first(ds.WindowCenter), _first(ds.WindowWidth)]
                out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True))
                # the window function's output range: its values far below and far above the window
                lo, hi = apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0, prefer_lut=True).tolist()
                if not _finite(out, lo, hi, *window):
                    what = _values_text(ds, "WindowCenter", "WindowWidth")
                    raise DataError(f"{label}: corrupt DICOM window: {what} (not finite, or giving non-finite values)")
                return _to_uint8(out, lo, hi)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError) as exc:
        raise DataError(f"{label}: cannot apply the DICOM LUTs ({_reason(exc)})") from exc
    used = values if present is None else values[present]
    if used.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    return _to_uint8(values, float(used.min()), float(used.max()))


def _apply_voi_table(values: np.ndarray, ds: Any) -> tuple[np.ndarray, float, float]:
    """The first VOI LUT of ``ds`` applied to integer ``values``, with its output range ``(0, 2**bits - 1)``.

    pydicom 3.0 computes the table index in the table's own dtype: for a table of 8-bit entries that is ``uint8``,
    so a stored value more than 255 above the first mapped value wrapped around (a 12-bit image through an 8-bit
    table came out 94 % wrong, and was segmented as ``ok``). The table is therefore applied as if its entries had
    16 bits (the same values, a ``uint16`` index), and the descriptor put back."""
    from pydicom.pixels import apply_voi_lut

    item = ds.VOILUTSequence[0]
    descriptor = [int(v) for v in item.LUTDescriptor]
    bits = descriptor[2]
    if bits != 8:
        return apply_voi_lut(values, ds, index=0, prefer_lut=True), 0.0, float(2**bits - 1)
    item.LUTDescriptor = [descriptor[0], descriptor[1], 16]
    try:
        return apply_voi_lut(values, ds, index=0, prefer_lut=True), 0.0, 255.0
    finally:
        item.LUTDescriptor = descriptor


def _grayscale_to_uint8(arr: np.ndarray, ds: Any, label: str) -> np.ndarray:
    """Steps 3-5 for a whole image through a table over its stored values.

    Every step is element-wise, so the pipeline runs once on each integer between the image's smallest and largest
    stored value (at most 65,536 of them) and the image is mapped through that ``uint8`` table: the same result as
    running it on every pixel, without float64 copies of a 2048x2048 image.
    """
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        return _voi_to_uint8(arr, ds, label)
    amin, amax = int(arr.min()), int(arr.max())
    index = arr if amin >= 0 and arr.dtype.kind == "u" else (arr.astype(np.int32) - amin)
    offset = amin if index is not arr else 0
    domain = np.arange(offset, amax + 1, dtype=np.int64)
    present = np.bincount(index.ravel(), minlength=amax + 1 - offset) > 0
    table = _voi_to_uint8(domain.astype(arr.dtype), ds, label, present)
    return table[index]


def read_dicom(source: Source, *, max_pixels: int, label: str | None = None) -> np.ndarray:
    """Decode a single-frame DICOM image (path or bytes) to ``uint8``: ``(H, W)`` grayscale or ``(H, W, 3)`` RGB.

    See the module docstring for what is applied, in which order, and the mapping to 0..255.

    Args:
        source: a DICOM file path, or its bytes.
        max_pixels: refuse images with more than this many pixels (``Rows * Columns``), checked before decoding.
        label: how to name the source in messages (default: the path, or ``"image data"`` for bytes).

    Raises:
        DataError: not DICOM, no image, multi-frame, unsupported bit depth or photometric interpretation, too
            many pixels, corrupt pixel data.
        DicomDecoderMissingError: the transfer syntax needs a decoder package that is not installed.
    """
    label = _label(source, label)
    ds = _dcmread(source, label, header_only=False)
    head = _checked_header(ds, label, spacing=False)  # the spacing is read_dicom_header's; it would warn again
    try:
        _check_image(ds, head, label, max_pixels)
    except DataError:
        raise
    except Exception as exc:  # a malformed value met while checking (e.g. Bits Allocated that is not a number)
        raise DataError(f"{label}: corrupt DICOM header ({_reason(exc)})") from exc
    try:
        with _pydicom_log_quiet(), warnings.catch_warnings():
            # a few bytes of trailing padding (more is refused above) are dropped by pydicom with a warning that
            # names no file: not a problem of the image, and no warning reaches the user for it
            warnings.filterwarnings("ignore", message=r"The pixel data is \d+ bytes long", category=UserWarning)
            arr = ds.pixel_array
    except MemoryError as exc:
        raise DataError(f"{label}: not enough memory to decode the DICOM pixel data") from exc
    except Exception as exc:  # pydicom and its plugins raise many types for corrupt or truncated data
        raise DataError(f"{label}: corrupt or truncated DICOM pixel data ({_decode_reason(exc)})") from exc
    expected = (head.rows, head.columns) + ((3,) if head.samples_per_pixel == 3 else ())
    if arr.shape != expected:
        raise DataError(f"{label}: decoded DICOM pixel data has shape {arr.shape}, expected {expected}")
    if head.samples_per_pixel == 3:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    out = _grayscale_to_uint8(arr, ds, label)
    if head.photometric == "MONOCHROME1":
        out = 255 - out
    return np.ascontiguousarray(out)
