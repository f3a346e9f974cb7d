"""Tests for scunext.data: reading, pair discovery, the dataset, splits, augmentation and the shipped samples."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scunext.data import (
    AugmentConfig,
    DataError,
    Pair,
    SegmentationDataset,
    Split,
    build_eval_transform,
    build_train_transform,
    carve_validation,
    convert_channels,
    csv_split,
    discover_pairs,
    kfold_split,
    list_samples,
    random_split,
    read_image,
    read_image_info,
    read_mask,
    resize_pair,
    sample_dir,
    select_pairs,
    verify_checksums,
)

# ----------------------------------------------------------------------------------------------- helpers


def _disk(h: int = 32, w: int = 40, cy: int = 14, cx: int = 20, r: int = 9) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def _make_folder(
    root: Path, stems: list[str], *, mask_dir: str = "masks", img_ext: str = ".png", h: int = 32, w: int = 40
) -> Path:
    rng = np.random.default_rng(0)
    for stem in stems:
        _save(root / "images" / f"{stem}{img_ext}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _save(root / mask_dir / f"{stem}.png", _disk(h, w).astype(np.uint8) * 255)
    return root


def _png_declaring_size(path: Path, width: int, height: int) -> Path:
    """A tiny valid 1-bit PNG whose header is patched to declare ``width`` x ``height`` (cheap bomb)."""
    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------------------------------------- shipped samples


@pytest.mark.parametrize("name", ["isic2017", "chest-xray-lungs"])
def test_shipped_sample_is_intact_and_discoverable(name: str) -> None:
    folder = sample_dir(name)
    assert (folder / "SOURCE.md").is_file()
    assert verify_checksums(folder) >= 61
    pairs = discover_pairs(folder)
    assert len(pairs) == 30
    assert [p.id for p in pairs] == sorted(p.id for p in pairs)
    image, mask = read_image(pairs[0].image), read_mask(pairs[0].mask)
    assert image.dtype == np.uint8 and mask.dtype == bool
    assert image.shape == ((256, 256, 3) if name == "isic2017" else (256, 256))
    assert mask.shape == (256, 256) and 0 < mask.mean() < 1
    for pair in pairs:  # every shipped mask is strictly binary and matches its image
        assert read_mask(pair.mask).shape == read_image(pair.image).shape[:2]


def test_sample_names() -> None:
    assert list_samples() == ["chest-xray-lungs", "isic2017"]
    with pytest.raises(ValueError, match="available: chest-xray-lungs, isic2017"):
        sample_dir("isic2018")
    lungs = [p.id for p in discover_pairs(sample_dir("chest-xray-lungs"))]
    assert any(i.startswith("MCUCXR_") for i in lungs) and any(i.startswith("CHNCXR_") for i in lungs)


def test_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  a.txt\n")
    with pytest.raises(DataError, match="a.txt: sha256 does not match"):
        verify_checksums(tmp_path)


# ----------------------------------------------------------------------------------------------- dataset on samples


def test_grayscale_to_three_channels_and_normalisation() -> None:
    ds = SegmentationDataset.from_folder(sample_dir("chest-xray-lungs"), in_channels=3, size=256)
    item = ds[0]
    image, mask = item["image"], item["mask"]
    assert image.shape == (3, 256, 256) and image.dtype == torch.float32
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    raw = read_image(ds.pairs[0].image)
    expected = (torch.from_numpy(raw).float() / 255 - 0.5) / 0.5
    assert torch.allclose(image[0], expected)
    assert image.min() >= -1 and image.max() <= 1
    assert mask.shape == (1, 256, 256) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert item["id"] == ds.pairs[0].id and item["orig_size"] == (256, 256)


def test_rgb_to_one_channel_uses_luma() -> None:
    pairs = discover_pairs(sample_dir("isic2017"))
    ds = SegmentationDataset(pairs[:2], in_channels=1, size=None, mean=0.0, std=1.0)
    image = ds[1]["image"]
    assert image.shape == (1, 256, 256)
    with Image.open(pairs[1].image) as im:
        luma = np.asarray(im.convert("L"), dtype=np.float32) / 255
    assert torch.allclose(image[0], torch.from_numpy(luma))


def test_per_channel_mean_std_and_arg_checks() -> None:
    pairs = discover_pairs(sample_dir("isic2017"))[:1]
    ds = SegmentationDataset(pairs, size=None, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0))
    raw = torch.from_numpy(read_image(pairs[0].image)).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor([0.1, 0.2, 0.3])[:, None, None]) / torch.tensor([1.0, 2.0, 4.0])[:, None, None]
    assert torch.allclose(ds[0]["image"], expected, atol=1e-6)
    with pytest.raises(ValueError, match="in_channels"):
        SegmentationDataset(pairs, in_channels=2)
    with pytest.raises(ValueError, match="mean"):
        SegmentationDataset(pairs, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        SegmentationDataset(pairs, std=0)
    with pytest.raises(ValueError, match="size"):
        SegmentationDataset(pairs, size=0)


@pytest.mark.parametrize("size", [100, 300, (64, 96)])
def test_resize_keeps_mask_binary(size: int | tuple[int, int]) -> None:
    pairs = discover_pairs(sample_dir("isic2017"))[:3]
    ds = SegmentationDataset(pairs, size=size)
    h, w = (size, size) if isinstance(size, int) else size
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, h, w) and item["mask"].shape == (1, h, w)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        full = read_mask(pairs[i].mask).mean()
        assert abs(item["mask"].mean().item() - full) < 0.02
        assert item["orig_size"] == (256, 256)


def test_resize_pair_and_convert_channels_helpers() -> None:
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
    mask = np.eye(4, dtype=np.uint8)
    img2, msk2 = resize_pair(image, mask, (2, 2))
    assert img2.shape == (2, 2, 1) and msk2.shape == (2, 2)
    assert img2[0, 0, 0] == round((0 + 10 + 40 + 50) / 4)  # area average of the top-left 2x2 block
    assert resize_pair(image, mask, (4, 4))[0] is image
    assert convert_channels(np.zeros((3, 3), np.uint8), 3).shape == (3, 3, 3)
    assert convert_channels(np.zeros((3, 3, 3), np.uint8), 1).shape == (3, 3, 1)


# ----------------------------------------------------------------------------------------------- reading files


def test_16bit_png_is_scaled_to_8bit(tmp_path: Path) -> None:
    arr = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    path = _save(tmp_path / "g16.png", arr)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    assert np.array_equal(out, np.arange(256, dtype=np.uint8).reshape(16, 16))
    twelve_bit = _save(tmp_path / "g12.png", (np.arange(256, dtype=np.uint16) * 16).reshape(16, 16))  # max 4080
    assert read_image(twelve_bit).max() == 16  # "full": 4080 / 257, dark
    stretched = read_image(twelve_bit, scale16="max")
    assert stretched.max() == 255 and stretched.min() == 0
    with pytest.raises(ValueError, match="scale16"):
        read_image(twelve_bit, scale16="auto")  # type: ignore[arg-type]


def test_32bit_integer_gray_holding_8bit_values_reads_as_is(tmp_path: Path) -> None:
    """A 32-bit integer TIFF (mode ``I``) declares no bit depth of its data: values within 0..255 are 8-bit and read as
    they are; above 255 they are scaled like 16-bit. A 16-bit PNG declares its depth and is always scaled."""
    ramp = np.arange(256).reshape(16, 16)
    eight = _save(tmp_path / "i32_8bit.tif", ramp.astype(np.int32))
    with Image.open(eight) as im:
        assert im.mode == "I"
    assert np.array_equal(read_image(eight), ramp.astype(np.uint8))
    twelve = _save(tmp_path / "i32_12bit.tif", (ramp * 16).astype(np.int32))  # max 4080
    assert read_image(twelve).max() == 16 and read_image(twelve, scale16="max").max() == 255
    dark16 = _save(tmp_path / "dark16.png", ramp.astype(np.uint16))  # declared 16-bit, max 255
    assert read_image(dark16).max() == 1


def test_rgba_la_palette_and_1bit(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[255, 255, 255], [0, 128, 255]]
    out = read_image(_save(tmp_path / "rgba.png", rgba))
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [200, 100, 50]  # opaque: unchanged
    assert out[1, 0].tolist() == [0, 0, 0]  # transparent: black
    assert out[1, 1].tolist() == [100, 50, 25]  # half: composited on black
    la = np.stack([np.full((2, 2), 200, np.uint8), np.array([[255, 0], [255, 255]], np.uint8)], axis=2)
    out = read_image(_save(tmp_path / "la.png", la, mode="LA"))
    assert out.shape == (2, 2) and out.tolist() == [[200, 0], [200, 200]]
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png")
    out = read_image(tmp_path / "pal.png")
    assert out.shape == (4, 4, 3) and out[1, 1].tolist() == [255, 0, 0] and out[0, 0].tolist() == [0, 0, 0]
    one = Image.new("1", (5, 4))
    one.putpixel((2, 1), 1)
    one.save(tmp_path / "one.png")
    out = read_image(tmp_path / "one.png")
    assert out.shape == (4, 5) and set(np.unique(out).tolist()) == {0, 255}
    assert read_mask(tmp_path / "one.png").sum() == 1


def test_palette_masks_read_by_gray_level_or_label_index(tmp_path: Path) -> None:
    """A binary mask saved as a palette image may have white at index 0 (Pillow's quantize does): read by index it
    was inverted and trained on the background. Gray palettes are read by gray level; a coloured label map by index."""
    disk = _disk()
    m = Image.fromarray(disk.astype(np.uint8) * 255)
    for i, pal in enumerate([m.convert("RGB").quantize(2), m.convert("P", palette=Image.Palette.ADAPTIVE, colors=2)]):
        pal.save(tmp_path / f"q{i}.png")
        assert Image.open(tmp_path / f"q{i}.png").mode == "P"
        np.testing.assert_array_equal(read_mask(tmp_path / f"q{i}.png"), disk)
    labels = Image.fromarray(disk.astype(np.uint8), mode="L").convert("P")  # index 0/1 ...
    labels.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # ... coloured black / red: a label map
    labels.save(tmp_path / "labels.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "labels.png"), disk)


def test_entries_left_out_of_a_dataset_are_announced(tmp_path: Path, caplog) -> None:
    """Images in a subfolder of images/ and broken or looping links were dropped without a word: now a warning
    names them (the UNeXt layout's masks/0/ class folder is not such an entry)."""
    root = _make_folder(tmp_path / "d", ["a", "b"])
    (root / "images" / "more").mkdir()
    (root / "images" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (root / "images" / "loop1.png").symlink_to(root / "images" / "loop2.png")
    (root / "images" / "loop2.png").symlink_to(root / "images" / "loop1.png")
    with caplog.at_level("WARNING", logger="scunext.data.dataset"):
        assert [p.id for p in discover_pairs(root)] == ["a", "b"]
    text = caplog.text
    assert "left out 4 item(s) that are not readable files" in text and "dangling.png" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="scunext.data.dataset"):
        discover_pairs(_make_folder(tmp_path / "unext", ["x"], mask_dir="masks/0"))
    assert "left out" not in caplog.text


def test_files_that_are_not_images_or_masks_are_named_with_the_reason(tmp_path: Path, caplog) -> None:
    """A file in images/ that has no image extension and no DICOM preamble (an export's IM000002 that is not
    DICOM, notes.txt), or a mask that is not PNG, is skipped with a warning that says why."""
    root = _make_folder(tmp_path / "d", ["a", "b"])
    (root / "images" / "IM000002").write_bytes(b"\0" * 200)  # extensionless, no DICM at byte 128
    (root / "images" / "notes.txt").write_text("x")
    (root / "masks" / "c.jpg").write_bytes(b"\xff\xd8")
    with caplog.at_level("WARNING", logger="scunext.data.dataset"):
        assert [p.id for p in discover_pairs(root)] == ["a", "b"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("images: skipped 2 file(s), neither an image type (.png, .jpg, .jpeg, .bmp, .tif, .tiff, "
                          ".dcm) nor DICOM (no DICM preamble): IM000002, notes.txt") for m in lines), lines
    assert any(m.endswith("masks: skipped 1 file(s), not PNG masks: c.jpg") for m in lines), lines


def test_csv_ids_that_are_not_on_disk_are_announced(tmp_path: Path, caplog) -> None:
    path = tmp_path / "splits.csv"
    path.write_text("image_id,isic2017_split\na,train\nb,test\nmissing1,test\nmissing2,val\n")
    with caplog.at_level("WARNING", logger="scunext.data.splits"):
        split = csv_split(path, ids=["a", "b"])
    assert split.test == ["b"] and split.description["listed_but_absent"] == 2
    assert "2 id(s) listed for a part are not among the dataset's images" in caplog.text and "missing1" in caplog.text


def test_csv_header_with_spaces_and_images_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    path.write_text("image_id, isic2017_split\na,train\nb, test\n")  # spaces after the commas
    assert csv_split(path, ids=["a", "b"]).counts() == {"train": 1, "val": 0, "test": 1}
    root = tmp_path / "d"
    (root / "masks").mkdir(parents=True)
    (root / "images").write_text("not a folder")
    with pytest.raises(DataError, match="images: a file, not the image folder"):
        discover_pairs(root)


def test_threshold_that_erases_a_mask_is_refused(tmp_path: Path) -> None:
    """--threshold-masks on a label map {0, 1, 2} or on 0..255 values in a 16-bit file left every mask empty (and a
    model trained on nothing): refused, one line, naming the values."""
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    low16 = np.array([[0, 100], [255, 0]], np.uint16)
    for name, arr in (("labels.png", labels), ("low16.png", low16)):
        path = _save(tmp_path / name, arr)
        with pytest.raises(DataError, match="leaves this mask empty") as exc:
            read_mask(path, threshold=True)
        assert "\n" not in str(exc.value)


def test_mask_value_conventions(tmp_path: Path) -> None:
    disk = _disk()
    for name, arr in {
        "m255.png": disk.astype(np.uint8) * 255,
        "m1.png": disk.astype(np.uint8),
        "m16.png": disk.astype(np.uint16) * 65535,
    }.items():
        assert np.array_equal(read_mask(_save(tmp_path / name, arr)), disk), name
    assert not read_mask(_save(tmp_path / "empty.png", np.zeros((4, 4), np.uint8))).any()
    assert read_mask(_save(tmp_path / "full.png", np.full((4, 4), 255, np.uint8))).all()
    gray_rgb = np.repeat((disk.astype(np.uint8) * 255)[..., None], 3, axis=2)
    assert np.array_equal(read_mask(_save(tmp_path / "rgb.png", gray_rgb)), disk)
    colour = gray_rgb.copy()
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(DataError, match=r"colour\.png: colour mask"):
        read_mask(_save(tmp_path / "colour.png", colour))


def test_non_binary_mask_raises_and_threshold_accepts(tmp_path: Path) -> None:
    arr = np.array([[0, 3, 127], [128, 254, 255]], np.uint8)
    path = _save(tmp_path / "soft.png", arr)
    with pytest.raises(DataError, match=r"soft\.png: mask is not binary, values \[0, 3, 127, 128, 254, 255\]") as exc:
        read_mask(path)
    assert "threshold=True" in str(exc.value) and "\n" not in str(exc.value)
    assert read_mask(path, threshold=True).tolist() == [[False, False, False], [True, True, True]]
    single = _save(tmp_path / "single.png", np.full((3, 3), 7, np.uint8))
    with pytest.raises(DataError, match="single.png"):
        read_mask(single)


def test_corrupt_truncated_empty_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError, match=r"junk\.png: not a readable image"):
        read_image(junk)
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.png: (corrupt or truncated|cannot open)"):
        read_image(truncated)
    jpg = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpg)
    (tmp_path / "cut.jpg").write_bytes(jpg.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cut\.jpg"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: file is empty"):
        read_mask(tmp_path / "empty.png")
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_decompression_bombs_are_refused(tmp_path: Path) -> None:
    huge = _png_declaring_size(tmp_path / "huge.png", 20000, 20000)  # 400 MP: above Pillow's own hard limit
    with pytest.raises(DataError, match=r"huge\.png: .*decompression bomb"):
        read_image(huge)
    with pytest.raises(DataError, match=r"huge\.png: .*decompression bomb"):
        read_mask(huge)
    big = _png_declaring_size(tmp_path / "big.png", 8000, 7000)  # 56 MP: above our 50 MP cap only
    with pytest.raises(DataError, match=r"big\.png: image is 8000x7000 = 56\.0 megapixels"):
        read_image(big)
    small = _save(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="above the limit"):
        read_image(small, max_pixels=99)
    # between Pillow's warning (89 MP) and its hard limit (179 MP) the caller's cap decides, and its message is
    # ours: Pillow's warning was an error, so a 120 MP cap admitted nothing above 89 MP and named Pillow's limit
    mid = _png_declaring_size(tmp_path / "mid.png", 10000, 10000)
    with pytest.raises(DataError, match=r"mid\.png: image is 10000x10000 = 100\.0 megapixels, above the limit of 50 "):
        read_image(mid)
    with pytest.raises(DataError, match=r"mid\.png: corrupt or truncated"):  # admitted; its 1 pixel of data is short
        read_image(mid, max_pixels=120_000_000)
    assert read_image_info(mid).size == (10000, 10000)


def _orientation_tagged(path: Path, arr: np.ndarray, orientation: int, **kw) -> Path:
    if path.suffix == ".jpg":
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(arr).save(path, exif=exif, quality=100, **kw)
    else:
        Image.fromarray(arr).save(path, tiffinfo={0x0112: orientation}, **kw)
    return path


def test_orientation_tags_never_rotate_pixels(tmp_path: Path, caplog) -> None:
    """JPEG: EXIF orientation ignored with a warning (pixels in stored order, like a mask drawn on them). TIFF:
    Pillow applies the tag itself on decode (and scrambles rotated uncompressed strips), so a TIFF with a tag
    other than 1 is refused before decoding; it was read rotated, with no warning (evaluate scored Dice 0.5)."""
    arr = np.zeros((20, 30), np.uint8)
    arr[2:8, 3:20] = 255
    jpg = _orientation_tagged(tmp_path / "r.jpg", arr, 6)
    with caplog.at_level("WARNING", logger="scunext.data.io"):
        got = read_image(jpg)
    assert got.shape == (20, 30) and np.abs(got.astype(int) - arr).max() < 16
    assert "EXIF orientation 6 ignored" in caplog.text
    for orientation in (3, 6, 8):
        for compression in (None, "tiff_lzw"):
            tif = _orientation_tagged(tmp_path / f"r{orientation}{compression}.tif", arr, orientation,
                                      **({"compression": compression} if compression else {}))  # fmt: skip
            for read in (read_image, read_image_info, read_mask):
                with pytest.raises(DataError, match=rf"TIFF orientation tag {orientation} .*not supported"):
                    read(tif)
    for orientation in (1, 0, 9):  # 1: the stored order; 0 and 9+: invalid values Pillow leaves alone
        plain = _orientation_tagged(tmp_path / f"r{orientation}.tif", arr, orientation)
        assert np.array_equal(read_image(plain), arr) and np.array_equal(read_mask(plain), arr > 0)
    # a training epoch reads every image again: the warning is given once, later files at debug level
    caplog.clear()
    with caplog.at_level("DEBUG", logger="scunext.data.io"):
        read_image(jpg)
        read_image(_orientation_tagged(tmp_path / "r2.jpg", arr, 8))
    assert [r.levelname for r in caplog.records if "EXIF orientation" in r.getMessage()] == ["DEBUG", "DEBUG"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's own notes on the broken TIFF below
def test_low_bit_16_bit_images_and_extra_frames_are_read_with_a_warning(tmp_path: Path, caplog) -> None:
    """12-bit data in a 16-bit PNG read on the full 16-bit range keeps 17 gray levels: said, not silent; a
    multi-page file is read from its first frame: said too."""
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))
    path = tmp_path / "12bit.png"
    Image.fromarray(ramp).save(path)
    with caplog.at_level("WARNING", logger="scunext.data.io"):
        got = read_image(path)
    assert len(np.unique(got)) == 17 and "only the low 12 bits (max 4080)" in caplog.text
    assert "nearly black (17 gray levels)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="scunext.data.io"):
        stretched = read_image(path, scale16="max")
        full = read_image(_save(tmp_path / "full16.png", (ramp.astype(np.uint32) * 16).astype(np.uint16)))
    assert len(np.unique(stretched)) == 256 and len(np.unique(full)) > 200 and "low 12 bits" not in caplog.text
    pages = tmp_path / "pages.tif"
    first, second = np.full((8, 8), 10, np.uint8), np.full((8, 8), 200, np.uint8)
    Image.fromarray(first).save(pages, save_all=True, append_images=[Image.fromarray(second)])
    with caplog.at_level("WARNING", logger="scunext.data.io"):
        assert np.array_equal(read_image(pages), first)
    assert "2 frames (multi-page or animated); only the first is read" in caplog.text
    # a next-page pointer past the end of the file: Pillow cannot count the frames (TypeError), the first page reads
    data = bytearray(pages.read_bytes())
    first_ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first_ifd : first_ifd + 2])[0]
    next_at = first_ifd + 2 + 12 * entries
    data[next_at : next_at + 4] = struct.pack("<I", len(data) + 1000)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(bytes(data))
    assert np.array_equal(read_image(broken), first) and read_image_info(broken).frames == 1


def test_a_mask_in_the_alpha_channel_is_refused(tmp_path: Path) -> None:
    """RGBA/LA masks with constant colour and the shape in alpha were read as all background: evaluate scored Dice
    0 silently (train refused only because every mask was empty)."""
    shape = np.zeros((16, 16), np.uint8)
    shape[4:12, 4:12] = 255
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = shape
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([np.zeros_like(shape), shape], -1), "LA").save(tmp_path / "la.png")
    for name in ("rgba.png", "la.png"):
        with pytest.raises(DataError, match=rf"{name}: mask colour is 0 everywhere and only its alpha channel varies"):
            read_mask(tmp_path / name)
    opaque = np.zeros((16, 16, 4), np.uint8)
    opaque[..., :3], opaque[..., 3] = shape[..., None], 255  # the usual RGBA mask: alpha constant, read by colour
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_mask(tmp_path / "opaque.png"), shape > 0)


def test_float_images_are_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.ones((8, 8), np.float32)).save(path)
    for read in (read_image, read_image_info):
        with pytest.raises(DataError, match=r"f\.tif: floating-point images are not supported"):
            read(path)


# ----------------------------------------------------------------------------------------------- discovery errors


def test_discover_layouts(tmp_path: Path) -> None:
    plain = _make_folder(tmp_path / "plain", ["b", "a", "c"], img_ext=".jpg")
    pairs = discover_pairs(plain)
    assert [p.id for p in pairs] == ["a", "b", "c"] and pairs[0].image.suffix == ".jpg"
    unext = _make_folder(tmp_path / "unext", ["x", "y"], mask_dir="masks/0")
    pairs = discover_pairs(unext)
    assert [p.id for p in pairs] == ["x", "y"] and pairs[0].mask.parent.name == "0"
    isic = tmp_path / "isic"
    _make_folder(isic, ["ISIC_1"])
    (isic / "masks" / "ISIC_1.png").rename(isic / "masks" / "ISIC_1_segmentation.png")
    assert discover_pairs(isic, mask_suffix="_segmentation")[0].id == "ISIC_1"
    (isic / "masks" / "ISIC_2.png").write_bytes((isic / "masks" / "ISIC_1_segmentation.png").read_bytes())
    (isic / "images" / "ISIC_2.png").write_bytes((isic / "images" / "ISIC_1.png").read_bytes())
    with pytest.raises(DataError, match=r"discover_pairs\(..., mask_suffix='_segmentation'\)"):
        discover_pairs(isic)  # one mask with the suffix, one without: not guessed, the error says how
    assert [p.id for p in discover_pairs(isic, mask_suffix="_segmentation")] == ["ISIC_1", "ISIC_2"]
    prefix = _make_folder(tmp_path / "prefix", [f"case{i}" for i in range(1, 13)])  # case1's mask missing:
    (prefix / "masks" / "case1.png").unlink()  # case10.png is case10's mask, not case1's with a suffix '0'
    with pytest.raises(DataError, match="1 image") as exc:
        discover_pairs(prefix)
    assert "suffix" not in str(exc.value), exc.value
    assert [p.id for p in select_pairs(discover_pairs(plain), ["c", "a"])] == ["c", "a"]
    with pytest.raises(DataError, match="1 id.* not found.*zzz"):
        select_pairs(discover_pairs(plain), ["a", "zzz"])


def test_official_isic_mask_names_pair_by_their_common_suffix(tmp_path: Path, caplog) -> None:
    """The official ISIC download names masks ISIC_0000000_segmentation.png, and mask_suffix had no command-line
    flag: train/evaluate refused the folder (rename every mask, or Python). When every mask is <image id><one
    suffix>.png, a different image each, the suffix is found and logged; anything less certain is still an error."""
    root = _make_folder(tmp_path / "isic", ["ISIC_1", "ISIC_10", "ISIC_2"], img_ext=".jpg")
    for f in list((root / "masks").iterdir()):
        f.rename(f.with_name(f"{f.stem}_segmentation.png"))
    with caplog.at_level("INFO", logger="scunext.data.dataset"):
        pairs = discover_pairs(root)
    assert [(p.id, p.mask.name) for p in pairs] == [("ISIC_1", "ISIC_1_segmentation.png"),
                                                    ("ISIC_10", "ISIC_10_segmentation.png"),
                                                    ("ISIC_2", "ISIC_2_segmentation.png")]  # fmt: skip
    assert "every mask is named <image id>_segmentation.png; paired by that suffix" in caplog.text
    (root / "images" / "ISIC_3.jpg").write_bytes((root / "images" / "ISIC_1.jpg").read_bytes())
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask \(ISIC_3\.jpg\)"):
        discover_pairs(root)  # an image without its mask is still one (named as such)
    assert [p.id for p in discover_pairs(root, unpaired="skip")] == ["ISIC_1", "ISIC_10", "ISIC_2"]
    (root / "images" / "ISIC_3.jpg").unlink()
    (root / "masks" / "ISIC_9_segmentation.png").write_bytes((root / "masks" / "ISIC_1_segmentation.png").read_bytes())
    with pytest.raises(DataError, match=r"1 mask\(s\) without an image \(ISIC_9_segmentation\.png\)"):
        discover_pairs(root)  # a mask whose image is missing: no suffix is guessed
    # a folder where masks pair by their names is never re-paired by a suffix, even when some do not pair: images
    # p1, p2, p3, p10, p20 and masks p10, p20, p30 (every mask ends with "0" after an image's id) stay p10 <- p10.png
    mixed = _make_folder(tmp_path / "mixed", ["p1", "p2", "p3", "p10", "p20"])
    for stem in ("p1", "p2", "p3"):
        (mixed / "masks" / f"{stem}.png").unlink()
    (mixed / "masks" / "p30.png").write_bytes((mixed / "masks" / "p10.png").read_bytes())
    assert [(p.id, p.mask.name) for p in discover_pairs(mixed, unpaired="skip")] == [("p10", "p10.png"),
                                                                                     ("p20", "p20.png")]  # fmt: skip
    with pytest.raises(DataError, match=r"3 image\(s\) without a mask \(p1\.png, p2\.png, p3\.png\); 1 mask"):
        discover_pairs(mixed)


def test_names_that_differ_only_in_unicode_normalisation_pair(tmp_path: Path) -> None:
    """An image named on Linux (composed ``ü``) and its mask copied from a Mac (``u`` + combining diaeresis) look
    the same to the user and pair; the id stays the image's own name; two images whose names differ only so are
    one id twice, refused like ``a.png`` + ``a.jpg``."""
    nfc, nfd = "M\u00fcller_1", "Mu\u0308ller_1"
    root = _make_folder(tmp_path / "d", [nfd, "b"])
    (root / "images" / f"{nfd}.png").rename(root / "images" / f"{nfc}.png")
    if not (root / "images" / f"{nfc}.png").exists() or (root / "images" / f"{nfd}.png").exists():
        pytest.skip("this file system normalises names itself")
    pairs = discover_pairs(root)
    got = [(p.id, p.image.name, p.mask.name) for p in pairs]
    assert got == [(nfc, f"{nfc}.png", f"{nfd}.png"), ("b", "b.png", "b.png")]  # sorted by id ("M" < "b")
    _save(root / "images" / f"{nfd}.jpg", np.zeros((32, 40, 3), np.uint8))
    with pytest.raises(DataError, match="duplicate file stem"):
        discover_pairs(root)


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        discover_pairs(tmp_path / "missing")
    (tmp_path / "noimages").mkdir()
    with pytest.raises(DataError, match=r"images: image folder not found"):
        discover_pairs(tmp_path / "noimages")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError, match=r"images: no image files"):
        discover_pairs(empty)
    _save(empty / "images" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"masks: no mask files"):
        discover_pairs(empty)

    root = _make_folder(tmp_path / "unpaired", ["a", "b", "c", "d", "e"])
    (root / "masks" / "a.png").unlink()
    (root / "masks" / "b.png").unlink()
    _save(root / "masks" / "zz.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as exc:
        discover_pairs(root)
    msg = str(exc.value)
    assert "2 image(s) without a mask (a.png, b.png)" in msg and "1 mask(s) without an image (zz.png)" in msg
    assert "5 images" in msg and "4 masks" in msg and "\n" not in msg

    root = _make_folder(tmp_path / "maskonly", ["a"])
    _save(root / "masks" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"1 mask\(s\) without an image \(b\.png\)"):
        discover_pairs(root)

    root = _make_folder(tmp_path / "jpgmask", ["a", "b"])
    (root / "masks" / "b.png").rename(root / "masks" / "b.jpg")
    with pytest.raises(DataError, match="masks must be PNG, found b.jpg"):
        discover_pairs(root)

    root = _make_folder(tmp_path / "dup", ["a", "b"])
    _save(root / "images" / "a.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"1 duplicate file stem.*a: a\.jpg, a\.png"):
        discover_pairs(root)

    root = _make_folder(tmp_path / "multiclass", ["a"], mask_dir="masks/0")
    _save(root / "masks" / "1" / "a.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(DataError, match="class folders 0, 1; only binary"):
        discover_pairs(root)


def test_dataset_item_errors(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "sizes", ["a"])
    _save(root / "masks" / "a.png", np.zeros((20, 40), np.uint8))
    ds = SegmentationDataset(discover_pairs(root), size=16)
    with pytest.raises(DataError, match=r"a\.png: mask is 40x20 \(WxH\) but its image a\.png is 40x32"):
        ds[0]
    root = _make_folder(tmp_path / "soft", ["a"])
    _save(root / "masks" / "a.png", (_disk() * 200).astype(np.uint8) + 10)
    with pytest.raises(DataError, match="not binary"):
        SegmentationDataset(discover_pairs(root))[0]
    item = SegmentationDataset(discover_pairs(root), size=None, threshold_masks=True)[0]
    assert torch.equal(item["mask"][0].bool(), torch.from_numpy(_disk()))


# ----------------------------------------------------------------------------------------------- splits

IDS = [f"case_{i:03d}" for i in range(30)]


def _assert_partition(split: Split, ids: list[str]) -> None:
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(len(p) for p in parts) == len(ids) and set().union(*parts) == set(ids)


def test_random_split_deterministic_disjoint_covering() -> None:
    a = random_split(IDS, test_fraction=0.2, seed=1)
    assert a == random_split(list(reversed(IDS)), test_fraction=0.2, seed=1)  # input order does not matter
    assert a.test != random_split(IDS, test_fraction=0.2, seed=2).test
    assert a.counts() == {"train": 24, "val": 0, "test": 6}  # the held-out part is called test
    assert random_split(IDS, seed=1) == a  # the default is the paper's 80/20
    _assert_partition(a, IDS)
    assert a.description == {"method": "random", "seed": 1, "test_fraction": 0.2, "stratified": False, "n_ids": 30}
    b = random_split(IDS, 0.1, seed=0)
    assert b.counts() == {"train": 27, "val": 0, "test": 3}
    _assert_partition(b, IDS)
    with pytest.raises(TypeError):  # the old keyword for the held-out part fails loudly instead of meaning val
        random_split(IDS, val_fraction=0.2)


def test_stratified_random_split() -> None:
    ids = [f"MCU_{i}" for i in range(10)] + [f"CHN_{i}" for i in range(20)]
    split = random_split(ids, 0.2, seed=0, strata=lambda i: i[:3])
    assert sum(i.startswith("MCU") for i in split.test) == 2 and sum(i.startswith("CHN") for i in split.test) == 4


def test_kfold_folds_partition_the_ids() -> None:
    splits = [kfold_split(IDS, folds=5, fold=k, seed=3) for k in range(5)]
    tests = [set(s.test) for s in splits]  # fold k is the held-out test part
    assert all(len(t) == 6 for t in tests) and all(s.val == [] for s in splits)
    assert set().union(*tests) == set(IDS) and sum(len(t) for t in tests) == len(IDS)
    for s in splits:
        _assert_partition(s, IDS)
        assert s.description["folds"] == 5
    assert kfold_split(IDS, 5, 2, seed=3) == splits[2]
    assert kfold_split(IDS, 5, 2, seed=4).test != splits[2].test
    assert [len(kfold_split(IDS[:7], 3, k).test) for k in range(3)] == [3, 2, 2]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kfold_split(IDS, folds=1), "folds must be an int >= 2"),
        (lambda: kfold_split(IDS, folds=5, fold=5), r"fold must be an int in \[0, 5\)"),
        (lambda: kfold_split(IDS, folds=5, fold=-1), "fold must be"),
        (lambda: kfold_split(IDS[:3], folds=5), "cannot make 5 folds from 3 ids"),
        (lambda: random_split(IDS, test_fraction=0), r"test_fraction must be in \(0, 1\)"),
        (lambda: random_split(IDS, test_fraction=1.0), "test_fraction"),
        (lambda: random_split(IDS[:1], 0.5), "cannot split 1 ids"),
        (lambda: random_split(IDS + IDS[:1], 0.2), "duplicates: case_000"),
        (lambda: random_split([], 0.2), "empty"),
        (lambda: random_split("abc", 0.2), "not a single string"),
        (lambda: carve_validation(IDS, fraction=1.5), "fraction"),
        (lambda: carve_validation(IDS[:1], fraction=0.5), "at least 2"),
    ],
)
def test_split_argument_validation(call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        call()


def test_carve_validation_only_from_train() -> None:
    train, val = carve_validation(IDS, fraction=0.1, seed=0)
    assert len(val) == 3 and not set(train) & set(val) and set(train) | set(val) == set(IDS)
    assert carve_validation(IDS, 0.1, 0) == (train, val)
    paper = random_split(IDS, 0.2, seed=0)
    honest = paper.with_carved_validation(0.125, seed=0)
    assert honest.test == paper.test  # the held-out part is only reported
    assert set(honest.val) <= set(paper.train) and len(honest.val) == 3
    _assert_partition(honest, IDS)
    assert honest.description["carved_validation"]["from"] == "train"
    with pytest.raises(ValueError, match="already has a val part and a test part"):
        random_split(IDS, 0.2).with_carved_validation(0.1).with_carved_validation(0.1)
    elsewhere = Split(train=IDS[:20], val=IDS[20:])  # a split from elsewhere holding out only a val part
    moved = elsewhere.with_carved_validation(0.1)
    assert moved.test == IDS[20:] and set(moved.val) <= set(IDS[:20])


def test_split_json_round_trip_and_errors(tmp_path: Path) -> None:
    split = kfold_split(IDS, 5, 1, seed=7)
    path = split.to_json(tmp_path / "sub" / "split.json")
    data = json.loads(path.read_text())
    assert data["format"] == "scunext-split/1" and data["counts"] == {"train": 24, "val": 0, "test": 6}
    assert Split.from_json(path) == split
    with pytest.raises(DataError, match="split file not found"):
        Split.from_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: invalid JSON"):
        Split.from_json(tmp_path / "bad.json")
    (tmp_path / "overlap.json").write_text(json.dumps({"format": "scunext-split/1", "train": ["a"], "val": ["a"]}))
    with pytest.raises(DataError, match=r"overlap\.json: id 'a' appears more than once \(train and val\)"):
        Split.from_json(tmp_path / "overlap.json")
    (tmp_path / "other.json").write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="not a split file"):
        Split.from_json(tmp_path / "other.json")


def test_csv_split_on_isic_sample(tmp_path: Path) -> None:
    folder = sample_dir("isic2017")
    split = csv_split(folder / "splits.csv", "isic2017_split", id_column="image_id")
    assert split.counts() == {"train": 18, "val": 4, "test": 8}
    assert split.ids == [p.id for p in discover_pairs(folder)]
    assert split.description["method"] == "csv" and len(split.description["csv_sha256"]) == 64
    some = split.train[:2] + split.test[:1]
    sub = csv_split(folder / "splits.csv", ids=some)
    assert sub.counts() == {"train": 2, "val": 0, "test": 1}
    honest = split.with_carved_validation  # val and test both exist: nothing to carve
    with pytest.raises(ValueError):
        honest(0.1)

    with pytest.raises(DataError, match=r"no split column 'fold'; columns are image_id, isic2017_split"):
        csv_split(folder / "splits.csv", "fold")
    with pytest.raises(DataError, match="not listed in the CSV: ISIC_9999999"):
        csv_split(folder / "splits.csv", ids=["ISIC_9999999"])
    named = tmp_path / "named.csv"  # file names where ids belong: the message said only "not listed"
    named.write_text("image_id,isic2017_split\nA.jpg,train\nB.png,test\n")
    with pytest.raises(DataError, match=r"2 id\(s\) are not listed in the CSV: A, B; the CSV lists file names "
                                        r"\('A\.jpg' for id 'A'\): an id is the file name without its extension$"):
        csv_split(named, ids=["A", "B"])
    with pytest.raises(DataError, match=r"not listed in the CSV: C$"):  # no hint where no file name matches
        csv_split(named, ids=["A.jpg", "C"])
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,isic2017_split\nA,train\nB,holdout\nC,test\n")
    with pytest.raises(
        DataError, match=r"bad\.csv: unknown value\(s\) in column 'isic2017_split': 'holdout' \(line 3\)"
    ):
        csv_split(bad)
    assert csv_split(bad, values={"train": "train", "test": "test", "holdout": None}).counts()["test"] == 1
    dup = tmp_path / "dup.csv"
    dup.write_text("image_id,isic2017_split\nA,train\nA,test\n")
    with pytest.raises(DataError, match="'A' is listed twice"):
        csv_split(dup)
    with pytest.raises(DataError, match="split CSV not found"):
        csv_split(tmp_path / "none.csv")
    # found by an audit: a column named twice took the last one silently; line numbers counted rows, not lines
    twice = tmp_path / "twice.csv"
    twice.write_text("image_id,split,split\nA,train,test\nB,test,train\n")
    with pytest.raises(DataError, match="column\\(s\\) 'split' named twice in the header"):
        csv_split(twice, column="split")
    blank = tmp_path / "blank.csv"
    blank.write_text("image_id,s\n\nA,train\n\nB,\"te\nst\"\n\nC,holdout\n")
    with pytest.raises(DataError, match="'holdout' \\(line 8\\)"):  # the file's line, blank and continued ones counted
        csv_split(blank, column="s", values={"train": "train", "te\nst": "test"})


# ----------------------------------------------------------------------------------------------- augmentation


def test_flips_and_rotations_keep_mask_aligned() -> None:
    t = build_train_transform(AugmentConfig(affine_p=0, brightness_contrast_p=0), seed=0)
    mask = _disk(32, 40, cy=9, cx=27, r=7).astype(np.uint8)
    image = np.repeat((mask * 255)[..., None], 3, axis=2)
    shapes = set()
    for _ in range(30):
        out = t(image=image, mask=mask)
        assert set(np.unique(out["mask"]).tolist()) <= {0, 1}
        assert np.array_equal(out["image"][..., 0] // 255, out["mask"])
        shapes.add(out["mask"].shape)
    assert shapes == {(32, 40), (40, 32)}  # rot90 happened


def test_full_augmentation_keeps_mask_binary_and_aligned() -> None:
    t = build_train_transform({"affine_p": 1.0, "brightness_contrast_p": 0.0}, seed=1)
    mask = _disk(64, 64, cy=30, cx=34, r=20).astype(np.uint8)
    image = np.repeat((mask * 255)[..., None], 3, axis=2)
    for _ in range(20):
        out = t(image=image, mask=mask)
        assert set(np.unique(out["mask"]).tolist()) <= {0, 1}
        disagreement = np.mean((out["image"][..., 0] >= 128) != out["mask"].astype(bool))
        assert disagreement < 0.02  # only interpolated boundary pixels of the image may differ
    gray = build_train_transform(seed=0)(image=image[..., :1], mask=mask)
    assert gray["image"].shape[:2] == gray["mask"].shape


def test_augmentation_config() -> None:
    assert build_train_transform(AugmentConfig.disabled()) is None
    assert build_train_transform({"enabled": False}) is None
    zero = {"hflip_p": 0, "vflip_p": 0, "rotate90_p": 0, "affine_p": 0, "brightness_contrast_p": 0}
    assert build_train_transform(zero) is None
    assert build_eval_transform() is None
    assert AugmentConfig.from_dict(AugmentConfig().to_dict()) == AugmentConfig()
    with pytest.raises(ValueError, match="unknown augmentation option.*hflip; valid:"):
        build_train_transform({"hflip": 0.5})
    with pytest.raises(ValueError, match="hflip_p is a probability"):
        AugmentConfig(hflip_p=1.5)
    with pytest.raises(ValueError, match="scale_limit must be < 1"):
        AugmentConfig(scale_limit=1.0)


def test_dataset_with_augmentation_and_workers(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "aug", [f"s{i}" for i in range(4)], h=48, w=48)
    for i in range(4):  # image == mask * 255, to check alignment after augmentation
        _save(root / "images" / f"s{i}.png", _disk(48, 48).astype(np.uint8) * 255)
    transform = build_train_transform({"affine_p": 1.0, "brightness_contrast_p": 0.0}, seed=0)
    ds = SegmentationDataset(discover_pairs(root), in_channels=1, size=32, transform=transform, mean=0, std=1)
    item = ds[0]
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert ((item["image"] >= 0.5).float() != item["mask"]).float().mean() < 0.03

    def batches() -> list[torch.Tensor]:
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
        return [b["image"] for b in loader]

    first, second = batches(), batches()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # reproducible under manual_seed
    assert not torch.equal(first[0], first[1])  # the two workers do not repeat each other's augmentations


def test_pair_is_plain_data() -> None:
    p = Pair(id="a", image=Path("i/a.png"), mask=Path("m/a.png"))
    assert p == Pair("a", Path("i/a.png"), Path("m/a.png"))
    with pytest.raises(TypeError, match="Pair"):
        SegmentationDataset([("a", "b", "c")])  # type: ignore[list-item]


def test_read_image_draft_size_decodes_large_jpegs_reduced(tmp_path):
    """``draft_size``: the smallest JPEG scale whose both sides stay >= draft_size; other formats unchanged; the
    pixel cap is on the native size."""
    yy, xx = np.mgrid[0:1500, 0:2000]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    jpg, png = tmp_path / "big.jpg", tmp_path / "big.png"
    Image.fromarray(rgb).save(jpg, quality=95)
    Image.fromarray(rgb).save(png)
    for draft, shape in [(None, (1500, 2000, 3)), (1500, (1500, 2000, 3)), (700, (750, 1000, 3)),
                         (300, (375, 500, 3)), (100, (188, 250, 3)), (1, (188, 250, 3))]:  # fmt: skip
        assert read_image(jpg, draft_size=draft).shape == shape, draft
    assert read_image(jpg.read_bytes(), draft_size=700).shape == (750, 1000, 3)  # bytes too
    full, half = read_image(jpg), read_image(jpg, draft_size=700)
    reference = np.asarray(Image.fromarray(full).resize((1000, 750), Image.Resampling.BOX)).astype(int)
    assert np.abs(half.astype(int) - reference).mean() < 8  # the same picture, at half the size
    assert read_image(png, draft_size=300).shape == (1500, 2000, 3)
    with pytest.raises(DataError, match="megapixels"):
        read_image(jpg, draft_size=300, max_pixels=2_000_000)  # 3 MP native, whatever the decoded size
    with pytest.raises(ValueError, match="draft_size"):
        read_image(jpg, draft_size=0)


def test_split_ids_match_across_unicode_normal_forms(tmp_path: Path) -> None:
    """A folder copied from a Mac stores 'Müller' decomposed (NFD); a splits.csv typed elsewhere holds it composed
    (NFC). Pairing matched them, but the CSV split and select_pairs compared raw strings: 'not listed in the CSV'
    for files that visibly exist. The parts keep the folder's own spelling."""
    import unicodedata

    nfd = [unicodedata.normalize("NFD", f"Müller_{i}") for i in range(4)]
    root = _make_folder(tmp_path / "mac", nfd)
    ids = [p.id for p in discover_pairs(root)]
    assert ids == sorted(nfd)
    csv_path = tmp_path / "splits.csv"
    rows = ["image_id,isic2017_split"] + [f"{unicodedata.normalize('NFC', i)},{part}"
                                          for i, part in zip(sorted(nfd), ["train", "train", "val", "test"])]
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    split = csv_split(csv_path, ids=ids)
    assert split.train == sorted(nfd)[:2] and split.val == [sorted(nfd)[2]] and split.test == [sorted(nfd)[3]]
    nfc = [unicodedata.normalize("NFC", i) for i in split.test]
    assert [p.id for p in select_pairs(discover_pairs(root), nfc)] == split.test
