"""The acquisition-shift catalogue and the intensity step: deterministic, shape-keeping, graded, one path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scunext.config import ConfigError, load_config
from scunext.data import SegmentationDataset, discover_pairs, read_image, sample_dir
from scunext.data.intensity import INTENSITY_METHODS, standardise_intensity
from scunext.data.preprocess import normalise, preprocess, resize_pair
from scunext.data.shifts import SHIFTS, apply_shift, image_seed, modality_of, parse_shifts, shift_conditions
from scunext.data.transforms import AugmentConfig, build_train_transform


def _images() -> dict[str, np.ndarray]:
    xray = read_image(sorted((sample_dir("chest-xray-lungs") / "images").iterdir())[0])
    derm = read_image(sorted((sample_dir("isic2017") / "images").iterdir())[0])
    return {"gray": xray, "colour": derm}


IMAGES = _images()
CASES = [(name, mod) for name, s in SHIFTS.items() for mod in s.modalities]


@pytest.mark.parametrize("name,modality", CASES)
def test_shift_keeps_shape_dtype_is_deterministic_and_identity_at_zero(name, modality):
    img = IMAGES[modality]
    assert np.array_equal(apply_shift(img, name, 0), img)
    for sev in SHIFTS[name].severities:
        a, b = apply_shift(img, name, sev, seed=3), apply_shift(img, name, sev, seed=3)
        assert a.dtype == np.uint8 and a.shape == img.shape
        assert np.array_equal(a, b)
        assert not np.array_equal(a, img), f"{name} severity {sev} did not change the image"
    # (H, W, 1) in -> (H, W, 1) out, same pixels as the 2-D call
    if modality == "gray":
        s1 = SHIFTS[name].severities[-1]
        assert np.array_equal(apply_shift(img[..., None], name, s1)[..., 0], apply_shift(img, name, s1))


@pytest.mark.parametrize("name,modality", [c for c in CASES if len(SHIFTS[c[0]].levels) > 1])
def test_severity_is_monotone(name, modality):
    img = IMAGES[modality].astype(np.float64)
    dist = [np.abs(apply_shift(IMAGES[modality], name, s, seed=1).astype(np.float64) - img).mean()
            for s in (0, *SHIFTS[name].severities)]  # fmt: skip
    assert all(a < b for a, b in zip(dist, dist[1:])), f"{name}: {dist}"


def test_documented_shift_facts():
    x = IMAGES["gray"]
    # wash-out at its strongest gives the failing films' statistics: pixel sd < 20 of 255, bright
    w = apply_shift(x, "washout", 3)
    assert w.std() < 20 and w.min() >= 215 and x.std() > 40
    assert np.array_equal(apply_shift(apply_shift(x, "invert", 1), "invert", 1), x)
    # noise: seeded per image, different images (or seeds) get different noise, the same seed the same
    n1 = apply_shift(x, "noise", 2, image_seed("a", "noise", 2))
    n2 = apply_shift(x, "noise", 2, image_seed("b", "noise", 2))
    assert not np.array_equal(n1, n2)
    assert abs((n1.astype(float) - x).std() - 16) < 3  # sd 16 of 255 (a little less where clipped)
    assert image_seed("a", "noise", 2) == image_seed("a", "noise", 2)
    # colour cast raises red and lowers blue
    c = apply_shift(IMAGES["colour"], "colorcast", 2).astype(float)
    o = IMAGES["colour"].astype(float)
    assert c[..., 0].mean() > o[..., 0].mean() and c[..., 2].mean() < o[..., 2].mean()
    assert np.array_equal(c[..., 1], o[..., 1])
    # vignetting darkens the corners, not the centre
    v = apply_shift(IMAGES["colour"], "vignette", 3)
    assert np.array_equal(v[128, 128], IMAGES["colour"][128, 128]) and v[0, 0].sum() < IMAGES["colour"][0, 0].sum()


def test_shift_selection_and_bad_input():
    assert "colorcast" not in parse_shifts("all", "gray") and "invert" not in parse_shifts("all", "colour")
    assert set(parse_shifts("all", "gray")) | set(parse_shifts("all", "colour")) == set(SHIFTS)
    assert parse_shifts("noise, gamma,noise") == ["noise", "gamma"]
    assert modality_of(1) == "gray" and modality_of(3) == "colour" and modality_of(IMAGES["colour"]) == "colour"
    assert shift_conditions(["invert", "jpeg"]) == [("clean", 0), ("invert", 1), ("jpeg", 1), ("jpeg", 2), ("jpeg", 3)]
    for spec, msg in (("", "no shifts"), ("gamma,nope", "unknown shift"), ("colorcast", "do not apply to gray")):
        with pytest.raises(ValueError, match=msg):
            parse_shifts(spec, "gray")
    with pytest.raises(ValueError, match="severities 0..3"):
        apply_shift(IMAGES["gray"], "gamma", 4)
    with pytest.raises(ValueError, match="uint8"):
        apply_shift(IMAGES["gray"].astype(np.float32), "gamma", 1)
    with pytest.raises(KeyError, match="valid: gamma"):
        apply_shift(IMAGES["gray"], "nope", 1)


# ---------------------------------------------------------------- intensity step


def test_intensity_none_is_the_old_path_bit_for_bit():
    x = IMAGES["gray"]
    img, _ = resize_pair(x[..., None], np.zeros(x.shape, np.uint8), (128, 128))
    assert torch.equal(preprocess(x, 1, 128), normalise(img))  # what preprocess computed before the option
    assert standardise_intensity(img, "none") is img


def test_percentile_undoes_washout_gain_and_offset():
    x = IMAGES["gray"][..., None]
    ref = standardise_intensity(x, "percentile")
    for name, sev in (("washout", 2), ("underexpose", 2), ("contrast", 2)):
        shifted = apply_shift(x, name, sev)
        out = standardise_intensity(shifted, "percentile")
        raw_err = np.abs(shifted.astype(float) - x).mean()
        assert np.abs(out.astype(float) - ref).mean() < raw_err / 4, name
    flat = np.full((16, 16, 1), 200, np.uint8)
    assert np.array_equal(standardise_intensity(flat, "percentile"), flat)  # a flat image is left alone


@pytest.mark.parametrize("method", INTENSITY_METHODS)
def test_dataset_and_inference_share_one_intensity_path(method):
    pairs = discover_pairs(sample_dir("chest-xray-lungs"))[:2]
    ds = SegmentationDataset(pairs, in_channels=1, size=64, intensity=method)
    for i, p in enumerate(pairs):
        assert torch.equal(ds[i]["image"], preprocess(read_image(p.image), 1, 64, method))
    out = standardise_intensity(IMAGES["colour"], method)
    assert out.shape == IMAGES["colour"].shape and out.dtype == np.uint8


def test_intensity_bad_values():
    with pytest.raises(ValueError, match="intensity must be one of"):
        SegmentationDataset([], intensity="zscore")
    with pytest.raises(ConfigError, match="intensity must be one of none, percentile, clahe"):
        load_config(None, {"intensity": "zscore"})
    assert load_config(None, {}).intensity == "none"


def test_photometric_augmentation_is_opt_in():
    pytest.importorskip("albumentations")
    names = lambda t: [type(s).__name__ for s in t.transforms]  # noqa: E731
    default = names(build_train_transform(AugmentConfig(), seed=0))
    assert not {"RandomGamma", "GaussNoise", "GaussianBlur"} & set(default)  # old runs augment as before
    strong = names(build_train_transform(AugmentConfig.photometric(), seed=0))
    assert strong[: len(default)] == default and strong[len(default) :] == ["RandomGamma", "GaussNoise", "GaussianBlur"]
    only_gamma = dict(gamma_p=1.0, noise_p=0, blur_p=0, brightness_contrast_p=0, hflip_p=0, vflip_p=0, rotate90_p=0,
                      affine_p=0)  # fmt: skip
    img = np.full((32, 32, 1), 128, np.uint8)
    levels = set()
    for seed in range(6):
        t = build_train_transform(AugmentConfig.photometric(**only_gamma), seed=seed)
        out = t(image=img, mask=np.zeros((32, 32), np.uint8))["image"]
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert out.min() == out.max()  # a gamma curve: one grey level stays one grey level (no noise, no blur)
        levels.add(int(out[0, 0, 0]))
    assert len(levels) > 1 and levels != {128}  # the gamma was applied, with a drawn exponent
    with pytest.raises(ValueError, match="gamma_limit must be < 1"):
        AugmentConfig(gamma_limit=1.0)


def test_all_stands_alone():
    """``--shifts all,noise`` said "unknown shift(s) all; valid: all, ...", contradicting itself."""
    with pytest.raises(ValueError, match="'all' stands alone"):
        parse_shifts("all,noise")
