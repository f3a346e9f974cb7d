"""A catalogue of deterministic acquisition shifts for stress tests: what another scanner, film or camera does to
an image. Each shift acts on the uint8 image *as read from disk* (before preprocessing), at severities 1..n
(severity 0 is the identity for every shift), keeps its shape and dtype, and is deterministic: the only random
shift (``noise``) draws from a generator seeded by the caller (per image, see :func:`image_seed`).

=============  ============  ===========================================================  ==================
name           modalities    what it does (parameter per severity 1, 2, 3)                models
=============  ============  ===========================================================  ==================
``gamma``      gray, colour  ``255 (x / 255) ** g``, g = 1.5, 2.0, 3.0 (darker midtones)   exposure curve
``contrast``   gray, colour  ``m + c (x - m)``, m the image mean, c = 0.6, 0.4, 0.25        flat, low-kV films
``washout``    gray, colour  ``lo + x (255 - lo) / 255``, lo = 140, 180, 215: intensities   scanned films,
                             squeezed into the bright end (pixel sd x 0.45, 0.29, 0.16)     nearly white
``underexpose`` gray, colour ``k x``, k = 0.6, 0.4, 0.25                                    under-exposure
``invert``     gray          ``255 - x`` (one level: polarity is not graded)                MONOCHROME1 raw
``noise``      gray, colour  additive Gaussian, sd = 8, 16, 32 (of 255), seeded per image   quantum noise
``blur``       gray, colour  Gaussian blur, sd = 1, 2, 4 pixels per 256 pixels of the       focus, motion
                             shorter side (scale-free)
``jpeg``       gray, colour  JPEG re-encoding at quality 30, 20, 10 (Pillow, 4:2:0)         compression
``downup``     gray, colour  shrink by 2, 4, 8 (area average) and back (bilinear)          low resolution
``colorcast``  colour        channel gains R x (1 + a), B x (1 - a), a = 0.15, 0.30, 0.45    white balance
``vignette``   colour        ``x (1 - v r^2)``, r = distance from the centre / half-diagonal, lens fall-off
                             v = 0.3, 0.5, 0.7
=============  ============  ===========================================================  ==================

All arithmetic is in float32, rounded half to even and clipped to 0..255.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "MODALITIES",
    "Shift",
    "SHIFTS",
    "apply_shift",
    "image_seed",
    "modality_of",
    "parse_shifts",
    "shift_conditions",
]

MODALITIES = ("gray", "colour")
"""``gray``: single-channel images (X-rays); ``colour``: RGB images (dermoscopy)."""


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gamma(img: np.ndarray, g: float, rng: np.random.Generator) -> np.ndarray:
    lut = _u8(255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** g)
    return lut[img]


def _contrast(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    m = float(x.mean())
    return _u8(m + c * (x - m))


def _washout(img: np.ndarray, lo: float, rng: np.random.Generator) -> np.ndarray:
    return _u8(lo + img.astype(np.float32) * ((255.0 - lo) / 255.0))


def _underexpose(img: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
    return _u8(img.astype(np.float32) * k)


def _invert(img: np.ndarray, _: float, rng: np.random.Generator) -> np.ndarray:
    return (255 - img).astype(np.uint8)


def _noise(img: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    return _u8(img.astype(np.float32) + rng.normal(0.0, sd, size=img.shape).astype(np.float32))


def _per_plane(img: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    if img.ndim == 2:
        return np.asarray(fn(Image.fromarray(img)), dtype=np.uint8)
    return np.stack([np.asarray(fn(Image.fromarray(img[..., c])), dtype=np.uint8) for c in range(img.shape[2])], 2)


def _blur(img: np.ndarray, sd256: float, rng: np.random.Generator) -> np.ndarray:
    sd = sd256 * min(img.shape[:2]) / 256.0
    return _per_plane(img, lambda p: p.filter(ImageFilter.GaussianBlur(radius=sd)))


def _jpeg(img: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("L" if img.ndim == 2 else "RGB"), dtype=np.uint8)
    return out.reshape(img.shape)


def _downup(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    return _per_plane(
        img, lambda p: p.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR)
    )


def _colorcast(img: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    gains = np.array([1.0 + a, 1.0, 1.0 - a], dtype=np.float32)
    return _u8(img.astype(np.float32) * gains)


def _vignette(img: np.ndarray, v: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / max(cy**2 + cx**2, 1e-6)
    gain = 1.0 - v * r2
    return _u8(img.astype(np.float32) * (gain[..., None] if img.ndim == 3 else gain))


@dataclass(frozen=True)
class Shift:
    """One acquisition shift.

    Attributes:
        name: identifier used on the command line.
        description: one line for reports.
        parameter: what the numbers in ``levels`` are.
        levels: the parameter at severity 1, 2, ... (severity 0 is the identity).
        modalities: subset of :data:`MODALITIES` the shift is meaningful for.
        monotone: larger severity is a stronger change of the image (checked by the tests).
        fn: ``fn(image uint8, parameter, rng) -> image uint8`` of the same shape.
    """

    name: str
    description: str
    parameter: str
    levels: tuple[float, ...]
    modalities: tuple[str, ...]
    monotone: bool
    fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

    @property
    def severities(self) -> tuple[int, ...]:
        """The valid non-zero severities, 1..len(levels)."""
        return tuple(range(1, len(self.levels) + 1))

    def __call__(self, image: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
        return apply_shift(image, self.name, severity, seed)


_BOTH = ("gray", "colour")
SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("gamma", "gamma curve (darker midtones)", "gamma", (1.5, 2.0, 3.0), _BOTH, True, _gamma),
        Shift("contrast", "contrast compressed around the mean", "contrast factor", (0.6, 0.4, 0.25), _BOTH, True,
              _contrast),
        Shift("washout", "intensities squeezed into the bright end", "black level", (140, 180, 215), _BOTH, True,
              _washout),
        Shift("underexpose", "under-exposure (intensities scaled down)", "gain", (0.6, 0.4, 0.25), _BOTH, True,
              _underexpose),
        Shift("invert", "inverted polarity (MONOCHROME1 shown raw)", "-", (1.0,), ("gray",), True, _invert),
        Shift("noise", "additive Gaussian noise, seeded per image", "sd of 255", (8, 16, 32), _BOTH, True, _noise),
        Shift("blur", "Gaussian blur", "sd in px per 256 px", (1.0, 2.0, 4.0), _BOTH, True, _blur),
        Shift("jpeg", "JPEG re-encoding", "quality", (30, 20, 10), _BOTH, True, _jpeg),
        Shift("downup", "down-sampled then up-sampled", "factor", (2, 4, 8), _BOTH, True, _downup),
        Shift("colorcast", "colour cast / white balance (R up, B down)", "gain change", (0.15, 0.30, 0.45),
              ("colour",), True, _colorcast),
        Shift("vignette", "vignetting (radial fall-off)", "fall-off at the corners", (0.3, 0.5, 0.7), ("colour",),
              True, _vignette),
    )
}  # fmt: skip
"""All shifts by name, in report order."""


def modality_of(image_or_channels: np.ndarray | int) -> str:
    """``"gray"`` for a 2-D / 1-channel image (or ``in_channels == 1``), else ``"colour"``."""
    if isinstance(image_or_channels, (int, np.integer)):
        return "gray" if int(image_or_channels) == 1 else "colour"
    img = image_or_channels
    return "gray" if img.ndim == 2 or img.shape[2] == 1 else "colour"


def image_seed(image_id: str, shift: str, severity: int, base: int = 0) -> int:
    """A stable seed for one (image, shift, severity): the same noise on every machine and every run."""
    return zlib.crc32(f"{base}:{image_id}:{shift}:{severity}".encode()) & 0x7FFFFFFF


def apply_shift(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply shift ``name`` at ``severity`` (0 = identity) to a uint8 ``(H, W)`` or ``(H, W, C)`` image.

    Returns a new uint8 array of the same shape (``severity == 0`` returns a copy).

    Raises:
        KeyError: unknown shift (the message lists the valid names).
        ValueError: severity out of range, or an image that is not uint8 2-D / 3-D.
    """
    if name not in SHIFTS:
        raise KeyError(f"unknown shift {name!r}; valid: {', '.join(SHIFTS)}")
    shift = SHIFTS[name]
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= len(
        shift.levels
    ):
        raise ValueError(f"shift {name!r} has severities 0..{len(shift.levels)}, got {severity!r}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"shifts act on uint8 (H, W) or (H, W, C) images, got {image.dtype} {image.shape}")
    squeeze = image.ndim == 3 and image.shape[2] == 1
    img = image[..., 0] if squeeze else image
    if severity == 0:
        out = img.copy()
    else:
        out = shift.fn(np.ascontiguousarray(img), float(shift.levels[severity - 1]), np.random.default_rng(seed))
    out = np.ascontiguousarray(out, dtype=np.uint8).reshape(img.shape)
    return out[..., None] if squeeze else out


def parse_shifts(spec: str | Iterable[str], modality: str | None = None) -> list[str]:
    """Shift names from ``"all"`` or ``"gamma,noise"`` (or a list); ``"all"`` keeps the shifts of ``modality``.

    Raises:
        ValueError: empty spec, unknown name, or a shift that does not apply to ``modality``.
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ValueError("no shifts given; use 'all' or names from: " + ", ".join(SHIFTS))
    if names == ["all"]:
        return [n for n, s in SHIFTS.items() if modality is None or modality in s.modalities]
    if "all" in names:
        raise ValueError("'all' stands alone (it is every shift); give 'all' or a list of names")
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown shift(s) {', '.join(unknown)}; valid: all, {', '.join(SHIFTS)}")
    if modality is not None:
        wrong = [n for n in names if modality not in SHIFTS[n].modalities]
        if wrong:
            raise ValueError(f"shift(s) {', '.join(wrong)} do not apply to {modality} images")
    return list(dict.fromkeys(names))


def shift_conditions(names: Sequence[str], severities: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """``[("clean", 0), (name, severity), ...]``: every severity of each shift (or those in ``severities`` that it
    has), preceded by the clean condition."""
    out = [("clean", 0)]
    for n in names:
        out += [(n, s) for s in SHIFTS[n].severities if severities is None or s in severities]
    return out
