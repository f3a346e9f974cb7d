"""Data: safe image/mask reading, pair discovery, the segmentation dataset, seeded splits, augmentation, samples."""

from __future__ import annotations

from scunext.data.dataset import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    Pair,
    SegmentationDataset,
    discover_pairs,
    image_id,
    is_image_file,
    select_pairs,
)
from scunext.data.errors import DataError
from scunext.data.io import MAX_IMAGE_PIXELS, ImageInfo, area_mm2, read_image, read_image_info, read_mask
from scunext.data.preprocess import convert_channels, resize_pair
from scunext.data.samples import SAMPLE_NAMES, list_samples, sample_dir, verify_checksums
from scunext.data.splits import SPLIT_FORMAT, Split, carve_validation, csv_split, kfold_split, random_split
from scunext.data.transforms import AugmentConfig, build_eval_transform, build_train_transform

__all__ = [
    "DataError",
    "MAX_IMAGE_PIXELS",
    "read_image",
    "read_image_info",
    "ImageInfo",
    "area_mm2",
    "read_mask",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "Pair",
    "image_id",
    "is_image_file",
    "discover_pairs",
    "select_pairs",
    "convert_channels",
    "resize_pair",
    "SegmentationDataset",
    "SPLIT_FORMAT",
    "Split",
    "random_split",
    "kfold_split",
    "csv_split",
    "carve_validation",
    "AugmentConfig",
    "build_train_transform",
    "build_eval_transform",
    "SAMPLE_NAMES",
    "list_samples",
    "sample_dir",
    "verify_checksums",
]
