"""Image/mask pair discovery and the PyTorch dataset for binary 2D segmentation.

Accepted folder layout (names matched by file stem)::

    root/
      images/NAME.png|jpg|jpeg|bmp|tif|tiff|dcm   # or a DICOM file without an image extension, e.g. images/NAME
      masks/NAME.png              # or the official UNeXt layout: masks/0/NAME.png

Every problem with the folder or its files raises :class:`~scunext.data.errors.DataError`.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from scunext.data.dicom import has_dicom_preamble
from scunext.data.errors import DataError
from scunext.data.intensity import check_intensity, standardise_intensity
from scunext.data.io import MAX_IMAGE_PIXELS, read_image, read_mask
from scunext.data.preprocess import convert_channels, model_input, normalise, resize_image, resize_pair
from scunext.data.splits import id_key

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "Pair",
    "image_id",
    "is_image_file",
    "discover_pairs",
    "select_pairs",
    "convert_channels",
    "resize_pair",
    "resize_image",
    "model_input",
    "SegmentationDataset",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
"""Image file extensions :func:`discover_pairs` picks up (case-insensitive); DICOM files are also found by their
preamble whatever their name (:func:`is_image_file`)."""

MASK_EXTENSIONS: tuple[str, ...] = (".png",)
"""Mask file extensions: lossless PNG only (JPEG masks have non-binary edges)."""

_SHOW = 3  # how many example names an error message lists


@dataclass(frozen=True)
class Pair:
    """One image and its mask.

    Attributes:
        id: the shared file stem (without any ``mask_suffix``), used as the sample id in splits.
        image: path of the image file.
        mask: path of the mask file.
    """

    id: str
    image: Path
    mask: Path


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def is_image_file(path: Path) -> bool:
    """True for a file with an extension in :data:`IMAGE_EXTENSIONS`, or any file carrying the DICOM preamble
    (``DICM`` at byte 128), such as the extensionless or UID-named files (``1.2.840.113619.2.5``) of a PACS export.
    Hidden files are not images."""
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    return path.suffix.lower() not in MASK_EXTENSIONS and has_dicom_preamble(path)


def image_id(path: Path) -> str:
    """The id of an image file: its stem for a known extension (``a.png`` -> ``a``), else the whole name (a DICOM
    file ``1.2.840.5`` -> ``1.2.840.5``, since its dots are part of a UID, not an extension)."""
    return path.stem if path.suffix.lower() in IMAGE_EXTENSIONS else path.name


def _list_files(folder: Path, warn: bool = True) -> list[Path]:
    """The visible regular files of ``folder`` (not searched recursively). Other visible entries (subfolders,
    broken or looping symbolic links) are left out with a warning, so that no image is dropped unannounced."""
    files, others = [], []
    for p in folder.iterdir():
        if not p.name.startswith("."):
            (files if p.is_file() else others).append(p)  # is_file() is False for a broken or looping link
    if others and warn:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in others)
        logger.warning("%s: left out %d item(s) that are not readable files (subfolders are not searched; broken "
                       "links): %s", folder, len(others), _examples(names))  # fmt: skip
    return sorted(files)


def _index(
    files: Iterable[Path], folder: Path, suffix: str = "", id_of: Callable[[Path], str] = lambda f: f.stem
) -> dict[str, Path]:
    """Map key -> file, raising DataError on duplicate keys (e.g. ``a.png`` and ``a.jpg``). The key is the id in
    Unicode normal form C, so that a name typed on one system pairs with the same name written by another (macOS
    file systems and archives store decomposed accents: ``u`` + combining diaeresis for ``ü``)."""
    by_id: dict[str, list[Path]] = {}
    for f in files:
        stem = id_of(f)
        key = stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem
        by_id.setdefault(unicodedata.normalize("NFC", key), []).append(f)
    dups = sorted(k for k, v in by_id.items() if len(v) > 1)
    if dups:
        detail = "; ".join(f"{k}: {', '.join(p.name for p in by_id[k])}" for k in dups[:_SHOW])
        more = ", ..." if len(dups) > _SHOW else ""
        raise DataError(
            f"{folder}: {len(dups)} duplicate file stem(s), each id needs exactly one file ({detail}{more})"
        )
    return {k: v[0] for k, v in by_id.items()}


def _resolve_mask_dir(mask_dir: Path) -> Path:
    """Return ``mask_dir`` or, for the official UNeXt layout, ``mask_dir/0``."""
    files = [f for f in _list_files(mask_dir, warn=False) if f.suffix.lower() in MASK_EXTENSIONS]
    subdirs = sorted(p.name for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [d for d in subdirs if d.isdigit()]
    if "0" not in class_dirs:
        return mask_dir
    if files:
        raise DataError(
            f"{mask_dir}: holds both mask files and a '0/' class folder (UNeXt layout); keep only one of the two"
        )
    if len(class_dirs) > 1:
        raise DataError(
            f"{mask_dir}: found class folders {', '.join(class_dirs)}; only binary segmentation (masks/0/) is supported"
        )
    logger.info("%s: using the UNeXt layout masks/0/", mask_dir)
    return mask_dir / "0"


def discover_pairs(
    root: str | os.PathLike[str],
    *,
    images: str = "images",
    masks: str = "masks",
    mask_suffix: str = "",
    unpaired: str = "error",
) -> list[Pair]:
    """Find all image/mask pairs under ``root``, sorted by id.

    An image ``images/NAME.ext`` (ext in :data:`IMAGE_EXTENSIONS`) pairs with ``masks/NAME<mask_suffix>.png``; a
    DICOM file with any other name (no extension, or a UID such as ``1.2.840.5``) is an image too, and its id is
    the whole file name (``masks/1.2.840.5.png``). The official UNeXt layout ``masks/0/NAME.png`` is accepted too.
    Hidden files are skipped; other files with an unsupported extension are skipped with a warning.

    Args:
        root: dataset folder.
        images: name of the image sub-folder.
        masks: name of the mask sub-folder.
        mask_suffix: text between the id and ``.png`` in mask names, e.g. ``"_segmentation"`` for the official
            ISIC file names (``ISIC_0000000_segmentation.png``).
        unpaired: ``"error"`` (default): an image without a mask or a mask without an image is a DataError;
            ``"skip"``: they are left out with a warning naming them. For callers whose ids come from elsewhere (a
            run's ``split.json``): a stray file added to the folder since must not block a resume or an
            evaluation, and an id of the split that lost its file is still reported by the caller.

    Returns:
        The pairs, sorted by id.

    Raises:
        DataError: missing or empty folders, duplicate stems, images without masks or masks without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found" if not root.exists() else f"{root}: not a folder")
    image_dir, mask_dir = root / images, root / masks
    for folder, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not folder.is_dir():
            found = f"a file, not the {what} folder" if folder.exists() else f"{what} folder not found"
            raise DataError(f"{folder}: {found} (expected {root}/{images}/ and {root}/{masks}/)")
    mask_dir = _resolve_mask_dir(mask_dir)

    image_all = _list_files(image_dir)
    image_files = [f for f in image_all if is_image_file(f)]
    mask_all = _list_files(mask_dir)
    mask_files = [f for f in mask_all if f.suffix.lower() in MASK_EXTENSIONS]
    if not image_files:
        raise DataError(f"{image_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}, or DICOM) found")
    if not mask_files:
        others = [f.name for f in mask_all]
        hint = f"; found {_examples(others)}, but masks must be PNG (lossless)" if others else ""
        raise DataError(f"{mask_dir}: no mask files (.png) found{hint}")
    not_images = f"neither an image type ({', '.join(IMAGE_EXTENSIONS)}) nor DICOM (no DICM preamble)"
    for folder, all_files, kept, why in ((image_dir, image_all, image_files, not_images),
                                         (mask_dir, mask_all, mask_files, "not PNG masks")):  # fmt: skip
        skipped = sorted({f.name for f in all_files} - {f.name for f in kept})
        if skipped:
            logger.warning("%s: skipped %d file(s), %s: %s", folder, len(skipped), why, _examples(skipped))

    by_image = _index(image_files, image_dir, id_of=image_id)
    by_mask = _index(mask_files, mask_dir, mask_suffix)
    if not mask_suffix and by_mask and not set(by_image) & set(by_mask):  # (not one mask pairs by its plain name)
        found = _common_mask_suffix(set(by_image), mask_files)
        if found:  # e.g. the official ISIC names ISIC_0000000_segmentation.png: every mask is <image id><suffix>.png
            logger.info("%s: every mask is named <image id>%s.png; paired by that suffix", mask_dir, found)
            by_mask = _index(mask_files, mask_dir, found)
    no_mask = sorted(set(by_image) - set(by_mask))
    no_image = sorted(set(by_mask) - set(by_image))
    if unpaired not in ("error", "skip"):
        raise ValueError(f"unpaired must be 'error' or 'skip', got {unpaired!r}")
    if (no_mask or no_image) and unpaired == "skip":
        stray = [by_image[k].name for k in no_mask] + [by_mask[k].name for k in no_image]
        logger.warning("%s: left out %d file(s) without a partner (image without a mask, or mask without an image): "
                       "%s", root, len(stray), _examples(sorted(stray)))  # fmt: skip
        by_image = {k: v for k, v in by_image.items() if k in by_mask}
    elif no_mask or no_image:
        parts = []
        if no_mask:
            parts.append(f"{len(no_mask)} image(s) without a mask ({_examples([by_image[k].name for k in no_mask])})")
        if no_image:
            parts.append(f"{len(no_image)} mask(s) without an image ({_examples([by_mask[k].name for k in no_image])})")
        counts = f"{len(by_image)} images in {image_dir}, {len(by_mask)} masks in {mask_dir}"
        hint = _pairing_hint(no_mask, {k: by_mask[k] for k in no_image}, mask_all)
        raise DataError(f"{root}: {'; '.join(parts)} [{counts}]{hint}")
    # the id is the image's own name as stored (the key only pairs), so that ids, their order and the splits of
    # earlier runs are what they were for every folder that paired before
    return sorted((Pair(id=image_id(by_image[k]), image=by_image[k], mask=by_mask[k]) for k in by_image),
                  key=lambda p: p.id)


def _common_mask_suffix(image_keys: set[str], mask_files: list[Path]) -> str | None:
    """The one suffix S that every mask name ends with (``<image id>S.png``, a different id each), for a folder in
    which no mask pairs by its plain name; None when there is no such S or more than one. A mask left without an
    image, or an image without a mask, is then reported (or skipped) as usual. (A folder where some masks pair by
    their names is never re-paired: images p1, p10 and masks p10, p30 must not become p1 <- p10.png.)"""
    stems = [unicodedata.normalize("NFC", f.stem) for f in mask_files]
    found = set()
    for first in sorted(stems)[:3]:  # (a candidate from a mask whose image is missing does not end every name)
        for key in image_keys:
            if not (first.startswith(key) and len(first) > len(key)):
                continue
            suffix = first[len(key) :]
            stripped = {st[: -len(suffix)] for st in stems if st.endswith(suffix)}
            if len(stripped) == len(stems) and stripped & image_keys:
                found.add(suffix)
    return found.pop() if len(found) == 1 else None


def _pairing_hint(no_mask: list[str], by_mask: dict[str, Path], mask_all: list[Path]) -> str:
    """Guess why images found no mask: non-PNG masks, or a suffix in the names of the masks that found no image
    (``by_mask``: only those; a paired mask is another image's, as ``case10.png`` is not ``case1``'s)."""
    if not no_mask:
        return ""
    wanted = set(no_mask)
    non_png = [f.name for f in mask_all if f.stem in wanted and f.suffix.lower() not in MASK_EXTENSIONS]
    if non_png:
        return f"; masks must be PNG, found {_examples(non_png)}"
    first = no_mask[0]
    for key in sorted(by_mask):
        if key.startswith(first) and len(key) > len(first):
            suffix = key[len(first) :]
            return (f"; mask names carry the suffix {suffix!r}? name each mask like its image ({first}.png, not "
                    f"{first}{suffix}.png), or in Python discover_pairs(..., mask_suffix={suffix!r})")  # fmt: skip
    return ""


def missing_ids(pairs: Sequence[Pair], ids: Iterable[str]) -> list[str]:
    """The ids that no pair has, compared in Unicode normal form C (:func:`~scunext.data.splits.id_key`)."""
    known = {id_key(p.id) for p in pairs}
    return [i for i in ids if id_key(i) not in known]


def select_pairs(pairs: Sequence[Pair], ids: Iterable[str]) -> list[Pair]:
    """The pairs whose id is in ``ids``, in the order of ``ids``.

    Raises:
        DataError: an id has no pair (e.g. a split file that does not match the folder).
    """
    if isinstance(ids, (str, bytes)):  # one id given bare was iterated letter by letter ("12 id(s) not found: I, S")
        raise TypeError(f"ids must be a list of ids, got the string {ids!r}; pass [{ids!r}] for one")
    by_id = {id_key(p.id): p for p in pairs}  # (normal form C: a split written on another system still matches)
    ids = list(ids)
    missing = missing_ids(pairs, ids)
    if missing:
        raise DataError(f"{len(missing)} id(s) not found among the {len(by_id)} pairs: {_examples(missing)}")
    return [by_id[id_key(i)] for i in ids]


def _per_channel(name: str, value: float | Sequence[float], channels: int) -> np.ndarray:
    vals = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if vals.ndim != 1 or vals.size not in (1, channels):
        raise ValueError(f"{name} must be a number or a sequence of {channels} numbers, got {value!r}")
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return np.broadcast_to(vals, (channels,)).astype(np.float32).reshape(channels, 1, 1)


class SegmentationDataset(Dataset[dict[str, Any]]):
    """Binary segmentation dataset over image/mask :class:`Pair` objects.

    Per item: read the image (:func:`~scunext.data.io.read_image`) and mask
    (:func:`~scunext.data.io.read_mask`), check they have the same size, convert the image to ``in_channels``
    (:func:`convert_channels`), resize both to ``size`` (:func:`resize_pair`: area/bilinear for the image, nearest
    for the mask), apply the optional augmentation to the uint8 image and {0, 1} mask, then normalise::

        image = (uint8 / 255 - mean) / std     # per channel; default mean = std = 0.5 -> values in [-1, 1]

    This is the only scaling (no second division by 255, unlike the official UNeXt loader).

    Each item is a dict: ``"image"`` float32 ``(C, H, W)``, ``"mask"`` float32 ``(1, H, W)`` with values in {0, 1},
    ``"id"`` the pair id, ``"orig_size"`` the file's ``(height, width)`` before resizing (for predictions at native
    resolution; the default collate turns it into ``[heights, widths]`` tensors).

    Augmentation randomness: when the transform has ``set_random_seed`` (an albumentations ``Compose``), each
    DataLoader worker reseeds it from ``torch.utils.data.get_worker_info().seed``, so workers do not repeat each
    other's augmentations and runs are reproducible under ``torch.manual_seed``.

    Args:
        pairs: the pairs to serve, e.g. ``select_pairs(discover_pairs(root), split.train)``.
        in_channels: 1 or 3; images are converted to this many channels.
        size: output side length (``size x size``), a ``(height, width)`` tuple, or ``None`` to keep each file's
            native size (batch size 1 then, unless all files share a size).
        transform: callable ``transform(image=uint8 (H, W, C), mask=uint8 (H, W)) -> dict`` with the same keys
            and a uint8 image (no Normalize/ToTensor: the dataset normalises), e.g.
            :func:`~scunext.data.transforms.build_train_transform`; ``None`` for evaluation.
        mean: normalisation mean, one number or one per channel, on the [0, 1] scale.
        std: normalisation standard deviation, one number or one per channel, > 0.
        threshold_masks: binarise non-binary masks (``>= 128``) instead of raising :class:`DataError`.
        max_pixels: pixel cap passed to the readers.
        intensity: per-image intensity step, ``none`` (default), ``percentile`` or ``clahe``
            (:mod:`scunext.data.intensity`); applied after augmentation, before normalisation.
        intensity_before_augment: apply the intensity step *before* the augmentation instead (training only; an
            item without a transform is unchanged): the photometric augmentation then perturbs the standardised
            image instead of being undone by the stretch (docs/robustness.md#6).

    Example:
        >>> from scunext.data import SegmentationDataset, discover_pairs, sample_dir
        >>> ds = SegmentationDataset(discover_pairs(sample_dir("isic2017")), in_channels=3, size=128)
        >>> ds[0]["image"].shape, ds[0]["mask"].shape
        (torch.Size([3, 128, 128]), torch.Size([1, 128, 128]))
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        in_channels: int = 3,
        size: int | tuple[int, int] | None = 256,
        transform: Callable[..., dict[str, Any]] | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        threshold_masks: bool = False,
        max_pixels: int = MAX_IMAGE_PIXELS,
        intensity: str = "none",
        intensity_before_augment: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        for p in self.pairs:
            if not isinstance(p, Pair):
                raise TypeError(f"pairs must hold Pair objects, got {type(p).__name__}")
        ids = [p.id for p in self.pairs]
        if len(set(ids)) != len(ids):
            dups = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate pair ids: {_examples(dups)}")
        if isinstance(in_channels, bool) or in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
        self.in_channels = in_channels
        self.size = self._check_size(size)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.transform = transform
        self.mean = _per_channel("mean", mean, in_channels)
        self.std = _per_channel("std", std, in_channels)
        if np.any(self.std <= 0):
            raise ValueError(f"std must be > 0, got {std!r}")
        if np.any(np.abs(self.mean) > 1):  # ImageNet's (123.7, 58.4) gave inputs all near -2.1, without an error
            raise ValueError(f"mean and std are on the [0, 1] scale (e.g. ImageNet's 0.485 / 0.229), got mean {mean!r} "
                             f"and std {std!r}: divide 0-255 values by 255")  # fmt: skip
        self.threshold_masks = bool(threshold_masks)
        self.max_pixels = max_pixels
        self.intensity = check_intensity(intensity)
        self.intensity_before_augment = bool(intensity_before_augment)
        self._worker_key: tuple[int, int] | None = None
        #: when set (the trainer sets it each epoch), sample ``i`` is augmented with a seed drawn from
        #: ``(augment_seed, i)`` alone: the same draws whatever the number of DataLoader workers or processes
        self.augment_seed: int | None = None

    @staticmethod
    def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
        if size is None:
            return None
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        try:
            h, w = size  # type: ignore[misc]
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int, a (height, width) tuple or None, got {size!r}") from None
        for v in (h, w):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"size must hold positive integers, got {size!r}")
        return (h, w)

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike[str],
        ids: Iterable[str] | None = None,
        *,
        mask_suffix: str = "",
        **kwargs: Any,
    ) -> SegmentationDataset:
        """Build a dataset from a folder (:func:`discover_pairs`), optionally restricted to ``ids``."""
        pairs = discover_pairs(root, mask_suffix=mask_suffix)
        if ids is not None:
            pairs = select_pairs(pairs, ids)
        return cls(pairs, **kwargs)

    @property
    def ids(self) -> list[str]:
        """The pair ids, in dataset order."""
        return [p.id for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The checked native-size pair: uint8 image ``(H, W, in_channels)`` and bool mask ``(H, W)``."""
        pair = self.pairs[index]
        image = read_image(pair.image, max_pixels=self.max_pixels)
        mask = read_mask(pair.mask, threshold=self.threshold_masks, max_pixels=self.max_pixels)
        if image.shape[:2] != mask.shape:
            (ih, iw), (mh, mw) = image.shape[:2], mask.shape
            raise DataError(f"{pair.mask}: mask is {mw}x{mh} (WxH) but its image {pair.image.name} is {iw}x{ih}")
        return convert_channels(image, self.in_channels), mask

    def _reseed_for(self, index: int) -> None:
        reseed = getattr(self.transform, "set_random_seed", None)
        if callable(reseed):
            reseed(int(np.random.SeedSequence([self.augment_seed, index]).generate_state(1)[0]))

    def _reseed_in_worker(self) -> None:
        info = get_worker_info()
        if info is None or self.transform is None:
            return
        key = (info.id, info.seed)
        if key != self._worker_key:
            self._worker_key = key
            reseed = getattr(self.transform, "set_random_seed", None)
            if callable(reseed):
                reseed(info.seed % 2**32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image, mask = self.load(index)
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        mask_u8 = mask.astype(np.uint8)
        if self.size is not None:
            image, mask_u8 = resize_pair(image, mask_u8, self.size)
        early = self.transform is not None and self.intensity_before_augment
        if early:
            image = standardise_intensity(image, self.intensity)
        if self.transform is not None:
            if self.augment_seed is not None:
                self._reseed_for(index)
            else:
                self._reseed_in_worker()
            out = self.transform(image=image, mask=mask_u8)
            image, mask_u8 = np.asarray(out["image"]), np.asarray(out["mask"])
            if image.ndim == 2:
                image = image[..., None]
            if mask_u8.ndim == 3 and mask_u8.shape[2] == 1:
                mask_u8 = mask_u8[..., 0]
            if image.dtype != np.uint8:
                raise ValueError(
                    f"transform returned a {image.dtype} image for {pair.id}; it must return uint8 (the dataset "
                    "normalises), so leave Normalize/ToTensor out of it"
                )
            if image.ndim != 3 or image.shape[2] != self.in_channels or mask_u8.shape != image.shape[:2]:
                raise ValueError(
                    f"transform returned image {image.shape} and mask {mask_u8.shape} for {pair.id}; expected "
                    f"(H, W, {self.in_channels}) and (H, W)"
                )
        if early:  # the step already ran before the augmentation
            img = normalise(image, self.mean, self.std)
        else:
            img = model_input(image, self.intensity, self.mean, self.std)
        msk = torch.from_numpy((np.asarray(mask_u8) > 0).astype(np.float32))[None]
        return {"image": img, "mask": msk, "id": pair.id, "orig_size": orig_size}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, in_channels={self.in_channels}, size={self.size}, "
            f"augment={self.transform is not None}, threshold_masks={self.threshold_masks})"
        )
