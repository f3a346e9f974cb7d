"""Training augmentation with albumentations (an optional dependency: ``pip install scunext[train]``).

The pipeline, in order, each step skipped when its probability is 0:

1. horizontal flip (``hflip_p``), 2. vertical flip (``vflip_p``), 3. random 90-degree rotation (``rotate90_p``),
4. small affine transform (``affine_p``): shift up to ``shift_limit`` of the side, scale by ``1 +- scale_limit``,
   rotate up to ``rotate_limit`` degrees; bilinear for the image, nearest for the mask, constant 0 outside,
5. brightness/contrast (``brightness_contrast_p``, ``brightness_limit``, ``contrast_limit``), image only,
6. photometric steps for acquisition robustness, image only, off by default (probability 0): gamma
   (``gamma_p``, gamma drawn from ``[1 - gamma_limit, 1 + gamma_limit]``), Gaussian noise (``noise_p``, sd up to
   ``noise_limit`` of the intensity range) and Gaussian blur (``blur_p``, sd up to ``blur_limit`` pixels).
   ``AugmentConfig.photometric()`` switches them on with the values used in docs/robustness.md.

Geometric steps move image and mask together and the mask always uses nearest-neighbour interpolation, so it stays
binary and aligned. Evaluation uses no augmentation (:func:`build_eval_transform` returns ``None``).

Importing albumentations sets ``NO_ALBUMENTATIONS_UPDATE=1`` (unless already set) so that the library does not
contact PyPI to look for updates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from scunext.errors import MissingDependencyError, shown

__all__ = ["AugmentConfig", "build_train_transform", "build_eval_transform"]


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings; a probability of 0 removes that step, ``enabled=False`` removes all.

    Attributes:
        enabled: master switch.
        hflip_p: probability of a horizontal flip.
        vflip_p: probability of a vertical flip.
        rotate90_p: probability of a rotation by a random multiple of 90 degrees.
        affine_p: probability of the affine step.
        shift_limit: largest shift, as a fraction of the image side, in [0, 1).
        scale_limit: scale drawn from ``[1 - scale_limit, 1 + scale_limit]``, in [0, 1).
        rotate_limit: largest rotation in degrees, in [0, 180].
        brightness_contrast_p: probability of the brightness/contrast step.
        brightness_limit: brightness change drawn from ``[-limit, limit]`` (fraction of the maximum value).
        contrast_limit: contrast factor drawn from ``[1 - limit, 1 + limit]``.
        gamma_p: probability of a random gamma curve; gamma_limit: gamma drawn from ``[1 - l, 1 + l]``, l < 1.
        noise_p: probability of additive Gaussian noise; noise_limit: its sd drawn up to this fraction of 255.
        blur_p: probability of a Gaussian blur; blur_limit: its sd drawn from ``[0.1, blur_limit]`` pixels.
    """

    enabled: bool = True
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rotate90_p: float = 0.5
    affine_p: float = 0.5
    shift_limit: float = 0.0625
    scale_limit: float = 0.1
    rotate_limit: float = 15.0
    brightness_contrast_p: float = 0.5
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    gamma_p: float = 0.0
    gamma_limit: float = 0.4
    noise_p: float = 0.0
    noise_limit: float = 0.06
    blur_p: float = 0.0
    blur_limit: float = 1.5

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled must be a bool, got {shown(self.enabled)}")
        for f in fields(self):
            if f.name == "enabled":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {shown(value)}")
            if f.name.endswith("_p") and not 0 <= value <= 1:
                raise ValueError(f"{f.name} is a probability and must be in [0, 1], got {value!r}")
            if value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value!r}")
        for name in ("shift_limit", "scale_limit", "contrast_limit", "gamma_limit"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be < 1, got {getattr(self, name)!r}")
        if self.brightness_limit > 1:
            raise ValueError(f"brightness_limit must be <= 1, got {self.brightness_limit!r}")
        if self.noise_limit > 1:
            raise ValueError(f"noise_limit must be <= 1, got {self.noise_limit!r}")
        if self.blur_limit < 0.1 and self.blur_p > 0:
            raise ValueError(f"blur_limit must be >= 0.1 pixels, got {self.blur_limit!r}")
        if self.rotate_limit > 180:
            raise ValueError(f"rotate_limit must be <= 180 degrees, got {self.rotate_limit!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentConfig:
        """Build from a mapping (e.g. a YAML section); unknown keys raise ValueError listing the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)  # (YAML keys may be numbers: `1: 2`)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {', '.join(map(str, unknown))}; valid: "
                             f"{', '.join(sorted(known))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all settings (for saving with a run)."""
        return asdict(self)

    @classmethod
    def photometric(cls, **overrides: Any) -> AugmentConfig:
        """The defaults plus the photometric steps on (gamma, noise, blur at probability 0.3; brightness/contrast
        limits 0.3), the "stronger photometric augmentation" option of docs/robustness.md."""
        base = dict(gamma_p=0.3, noise_p=0.3, blur_p=0.3, brightness_limit=0.3, contrast_limit=0.3)
        return cls(**{**base, **overrides})

    @classmethod
    def disabled(cls) -> AugmentConfig:
        """A config with augmentation switched off."""
        return cls(enabled=False)


def _import_albumentations() -> tuple[Any, Any]:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations as A
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "training augmentation needs albumentations (and OpenCV): pip install 'scunext[train]'"
        ) from exc
    return A, cv2


def build_train_transform(cfg: AugmentConfig | Mapping[str, Any] | None = None, seed: int | None = None) -> Any:
    """Build the training augmentation as an albumentations ``Compose``.

    The result is called as ``t(image=uint8 (H, W, C), mask=uint8 (H, W))`` and returns a dict with the same keys,
    which is what :class:`~scunext.data.dataset.SegmentationDataset` expects.

    Args:
        cfg: settings; ``None`` for the defaults of :class:`AugmentConfig`, or a mapping of its fields.
        seed: seed of the ``Compose``'s own random state (albumentations ignores global seeds). The dataset
            reseeds it per DataLoader worker.

    Returns:
        An ``albumentations.Compose``, or ``None`` when augmentation is disabled or every step has probability 0.

    Raises:
        ValueError: invalid settings.
        MissingDependencyError: albumentations is not installed (an ImportError).
    """
    if cfg is None:
        cfg = AugmentConfig()
    elif isinstance(cfg, Mapping):
        cfg = AugmentConfig.from_dict(cfg)
    elif not isinstance(cfg, AugmentConfig):
        raise TypeError(f"cfg must be an AugmentConfig, a mapping or None, got {type(cfg).__name__}")
    if not cfg.enabled:
        return None
    A, cv2 = _import_albumentations()
    steps: list[Any] = []
    if cfg.hflip_p > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip_p))
    if cfg.vflip_p > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip_p))
    if cfg.rotate90_p > 0:
        steps.append(A.RandomRotate90(p=cfg.rotate90_p))
    if cfg.affine_p > 0:
        steps.append(
            A.Affine(
                translate_percent=(-cfg.shift_limit, cfg.shift_limit),
                scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit),
                rotate=(-cfg.rotate_limit, cfg.rotate_limit),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=cfg.affine_p,
            )
        )
    if cfg.brightness_contrast_p > 0:
        steps.append(
            A.RandomBrightnessContrast(
                brightness_limit=cfg.brightness_limit, contrast_limit=cfg.contrast_limit, p=cfg.brightness_contrast_p
            )
        )
    if cfg.gamma_p > 0:
        lo, hi = 100 * (1 - cfg.gamma_limit), 100 * (1 + cfg.gamma_limit)
        steps.append(A.RandomGamma(gamma_limit=(lo, hi), p=cfg.gamma_p))
    if cfg.noise_p > 0:
        steps.append(A.GaussNoise(std_range=(0.0, cfg.noise_limit), p=cfg.noise_p))
    if cfg.blur_p > 0:
        steps.append(A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, cfg.blur_limit), p=cfg.blur_p))
    if not steps:
        return None
    return A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST, seed=seed)


def build_eval_transform() -> None:
    """Evaluation uses no augmentation: returns ``None`` (resizing and normalisation are done by the dataset)."""
    return None
