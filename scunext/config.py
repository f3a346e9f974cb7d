"""Training configuration: one dataclass is the single source of truth; YAML files and CLI flags override it and
the resolved config is saved with every run (``config.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TrainConfig", "load_config", "apply_overrides", "ConfigError"]


class ConfigError(ValueError):
    """An invalid configuration value or an unknown key."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the paper's protocol (section 4.2) where it has one.

    Attributes:
        model: registered model name.
        model_args: constructor overrides (e.g. ``{"pfm": false}``).
        data: dataset folder (``images/`` + ``masks/``); empty = the shipped ISIC 2017 sample.
        in_channels: model input channels; 0 = decide from the first image (1 for grayscale, else 3).
        size: training and inference size (images resized to size x size).
        split: ``random`` (80/20, ``test_fraction``), ``kfold`` (``folds``/``fold``) or ``csv`` (``split_csv``
            column ``split_column``, values train/val/test).
        test_fraction: held-out test part of a random split (paper: 0.2).
        val_fraction: part of the *training* side carved out for model selection (never the test part).
        folds, fold: k-fold cross-validation; fold k is the test part.
        split_csv, split_column: CSV split; empty ``split_csv`` means ``<data>/splits.csv``.
        max_images: use a seeded pick of this many images of the dataset before splitting (the paper's 120-image
            ablation), 0 = all.
        max_train_images: cap the training images (seeded pick), 0 = all.
        seed: seeds the split, the weights, the data order and the augmentation.
        epochs, batch_size, lr, min_lr, beta1, beta2, weight_decay: Adam + cosine annealing to ``min_lr``.
        loss: ``bce_dice``, ``edge`` or ``joint``; loss_args: their keyword arguments (e.g. ``edge_weight``).
        augment: albumentations options (see docs/data.md); ``{"enabled": false}`` turns augmentation off.
        threshold_masks: binarise masks with values other than {0, 1, 255} instead of rejecting them.
        num_workers: DataLoader workers.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``; amp: mixed precision (CUDA only); amp_dtype: ``auto``
            (bfloat16 where the GPU has it, else float16 with loss scaling), ``bfloat16`` or ``float16``.
        eval_every: validate every N epochs (the last epoch is always validated).
        channels_last: train with weights and batches in channels_last memory format (same function; faster on CPU
            for these small-width networks, see docs/performance.md).
        hd95_in_val: also compute HD95 during validation (slower).
        intensity: per-image intensity step before normalisation, ``none`` (default, as before), ``percentile`` or
            ``clahe`` (docs/data.md); used by training, evaluation, predict, export and serve alike.
    """

    model: str = "sc_unext"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    in_channels: int = 0
    size: int = 256
    split: str = "random"
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    folds: int = 5
    fold: int = 0
    split_csv: str = ""
    split_column: str = "isic2017_split"
    max_images: int = 0
    max_train_images: int = 0
    seed: int = 0
    epochs: int = 400
    batch_size: int = 8
    lr: float = 1e-4
    min_lr: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 1e-4
    loss: str = "bce_dice"
    loss_args: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    threshold_masks: bool = False
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "auto"
    eval_every: int = 1
    channels_last: bool = False
    hd95_in_val: bool = False
    intensity: str = "none"

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` for an invalid value; return self."""
        checks = [
            (self.size >= 32, "size must be >= 32"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0 and self.min_lr >= 0 and self.min_lr <= self.lr, "need 0 <= min_lr <= lr and lr > 0"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.split in ("random", "kfold", "csv"), f"split must be random, kfold or csv, got {self.split!r}"),
            (0 < self.test_fraction < 1, "test_fraction must be in (0, 1)"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (self.folds >= 2 and 0 <= self.fold < self.folds, "need folds >= 2 and 0 <= fold < folds"),
            (self.max_train_images >= 0 and self.max_images >= 0, "max_images/max_train_images must be >= 0"),
            (self.in_channels in (0, 1, 3), "in_channels must be 0 (auto), 1 or 3"),
            (self.device in ("auto", "cpu", "cuda", "mps"), "device must be auto, cpu, cuda or mps"),
            (self.amp_dtype in ("auto", "bfloat16", "float16"), "amp_dtype must be auto, bfloat16 or float16"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (isinstance(self.model_args, dict) and isinstance(self.loss_args, dict), "model_args/loss_args: mappings"),
            (isinstance(self.augment, dict), "augment must be a mapping"),
            (self.intensity in ("none", "percentile", "clahe"), "intensity must be none, percentile or clahe"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"invalid config: {msg}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid: {', '.join(sorted(known))}")
        return apply_overrides(cls(), data)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of the field's default (YAML / CLI strings)."""
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, dict):
        if isinstance(value, str):
            value = yaml.safe_load(value) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    try:
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {type(default).__name__}, got {value!r}") from None
    return str(value)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with ``overrides`` applied (values coerced to the field types); None values are skipped."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    values = cfg.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(sorted(fields))}")
        values[key] = _coerce(key, value, getattr(TrainConfig(), key))
    return TrainConfig(**values)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- overrides, validated."""
    cfg = TrainConfig()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys")
        cfg = TrainConfig.from_dict(data)
    return apply_overrides(cfg, overrides or {}).validate()
