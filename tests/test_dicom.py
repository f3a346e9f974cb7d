"""DICOM in (scunext.data.dicom through read_image / read_image_info) and DICOM SEG out (scunext.deploy.dicom_seg).

Every DICOM file is generated here from the shipped samples with pydicom. Each decoded image is compared with an
expectation computed independently in numpy from the standard's formulas (DICOM PS3.3 C.11), not with the code
under test.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import get_decoder, get_encoder  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from scunext.data import (  # noqa: E402
    DataError,
    SegmentationDataset,
    area_mm2,
    discover_pairs,
    read_image,
    read_image_info,
    read_mask,
    sample_dir,
)
from scunext.data.dicom import DicomDecoderMissingError  # noqa: E402
from scunext.errors import MissingDependencyError  # noqa: E402

CHEST = "CHNCXR_0021_0"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage

# ----------------------------------------------------------------------------------------------- helpers


def _chest() -> np.ndarray:
    with Image.open(sample_dir("chest-xray-lungs") / "images" / f"{CHEST}.png") as im:
        arr = np.asarray(im.convert("L"), dtype=np.uint8)
    assert arr.min() == 0 and arr.max() == 255  # the expectations below rely on the full 8-bit range
    return arr


def _chest_mask() -> np.ndarray:
    return read_mask(sample_dir("chest-xray-lungs") / "masks" / f"{CHEST}.png")


def _dataset(
    stored: np.ndarray,
    *,
    bits_stored: int = 8,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    sop_class: str = CR_STORAGE,
) -> Dataset:
    """A complete single-frame DICOM image (patient, study, series, image pixel modules) holding ``stored``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CR", 1, 1, "test"
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel = 3 if stored.ndim == 3 else 1
    if stored.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
    dtype = np.uint8 if ds.BitsAllocated == 8 else (np.int16 if signed else np.uint16)
    low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    assert low <= stored.min() and stored.max() <= high, "test data outside the stored bits"
    ds.PixelData = stored.astype(dtype).tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.uint8)


def _linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..255, written out here independently of pydicom."""
    return _round(255 * np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1))


def _linear_exact_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2 (LINEAR_EXACT) onto 0..255."""
    return _round(255 * np.clip((x - c) / w + 0.5, 0, 1))


def _sigmoid_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1 (SIGMOID) onto 0..255."""
    with np.errstate(over="ignore"):
        return _round(255 / (1 + np.exp(-4 * (x - c) / w)))


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return _round((x - x.min()) * 255 / (x.max() - x.min()))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


# ----------------------------------------------------------------------------------------------- decoding


def test_8bit_without_window_is_min_max(tmp_path: Path) -> None:
    png = _chest()
    full = read_image(_save(_dataset(png), tmp_path / "full.dcm"))
    assert full.dtype == np.uint8 and full.shape == png.shape and full.flags.c_contiguous
    assert np.array_equal(full, png)  # min 0 and max 255: min-max is the identity
    narrow = png // 2 + 50  # 50..177: stretched back to 0..255
    out = read_image(_save(_dataset(narrow), tmp_path / "narrow.dcm"))
    assert np.array_equal(out, _minmax(narrow)) and out.min() == 0 and out.max() == 255


@pytest.mark.parametrize(
    ("bits", "signed", "scale", "offset", "slope", "intercept", "centre", "width", "function", "clips"),
    [
        (12, False, 16, 3, 0.5, -1000.0, 0.0, 1000.0, "LINEAR", True),  # 12 of 16 bits, CT-like rescale
        (16, False, 257, 0, 1.0, 0.0, 30000.0, 50000.0, "LINEAR", True),  # full 16 bits stored
        (16, True, 128, -16000, 2.0, 100.0, 700.0, 30001.0, "LINEAR_EXACT", True),  # signed, negative values
        (12, False, 16, 3, 1.0, 0.0, 2048.0, 8001.0, "LINEAR", False),  # a wide window: the data is not stretched
        (12, False, 16, 3, 1.0, 0.0, 2000.0, 3000.0, "SIGMOID", False),  # never reaches 0 or 255 exactly
        (12, False, 16, 3, 1.0, 0.0, 2000.0, 30.0, "SIGMOID", True),  # a steep sigmoid: exp() overflows at the ends
    ],
)
def test_rescale_then_window(tmp_path: Path, bits, signed, scale, offset, slope, intercept, centre, width,
                             function, clips) -> None:  # fmt: skip
    png = _chest().astype(np.int64)
    stored = png * scale + offset
    ds = _dataset(stored, bits_stored=bits, signed=signed)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = centre, width, function
    x = stored * slope + intercept  # the modality LUT
    window = {"LINEAR": _linear_window, "LINEAR_EXACT": _linear_exact_window, "SIGMOID": _sigmoid_window}[function]
    expected = window(x, centre, width)
    out = read_image(_save(ds, tmp_path / "w.dcm"))
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    if clips:  # the window clips at both ends
        assert 0 < (out == 0).mean() < 1 and 0 < (out == 255).mean() < 1
    else:  # the data lies inside the window, so it fills only part of 0..255
        assert 0 < out.min() and out.max() < 255


@pytest.mark.parametrize("empty", ["centre", "width", "both"])
def test_an_empty_window_is_no_window(tmp_path: Path, empty) -> None:
    """Exports write empty Window Center/Width elements; "WindowCenter in ds" held for them and float(None) made
    the file a skipped "cannot apply the DICOM LUTs". Empty is read as no window: min-max, as without one."""
    narrow = _chest() // 2 + 50
    ds = _dataset(narrow)
    ds.WindowCenter, ds.WindowWidth = ("" if empty in ("centre", "both") else 100), ("" if empty != "centre" else 80)
    path = _save(ds, tmp_path / "w.dcm")
    assert "WindowCenter" in pydicom.dcmread(path) and "WindowWidth" in pydicom.dcmread(path)
    assert np.array_equal(read_image(path), _minmax(narrow))


def test_first_of_several_windows_is_used(tmp_path: Path) -> None:
    png = _chest()
    ds = _dataset(png)
    ds.WindowCenter, ds.WindowWidth = [100, 128], [80, 256]
    assert np.array_equal(read_image(_save(ds, tmp_path / "w.dcm")), _linear_window(png, 100, 80))


def test_voi_lut_sequence_wins_over_window_and_follows_the_rescale(tmp_path: Path) -> None:
    png = _chest().astype(np.int64)
    stored = png * 16 + 10  # 12 bits stored
    ds = _dataset(stored, bits_stored=12)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -10  # modality output = png * 16, 0..4080
    ds.WindowCenter, ds.WindowWidth = 40, 80  # ignored: a VOI LUT Sequence takes precedence
    first, entries = 16, 4096
    lut = np.round(65535 * (np.arange(entries) / (entries - 1)) ** 0.5).astype(np.int64)  # a gamma curve
    item = Dataset()
    item.LUTDescriptor = [entries, first, 16]
    item.LUTData = lut.tolist()
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    x = png * 16
    index = np.clip(x - first, 0, entries - 1)  # below the first mapped value: entry 0; above the last: the last
    expected = _round(lut[index] * 255 / 65535)
    assert np.array_equal(read_image(_save(ds, tmp_path / "lut.dcm")), expected)


@pytest.mark.parametrize("first", [0, 1000])
def test_a_voi_lut_of_8_bit_entries_on_12_bit_data(tmp_path: Path, first: int) -> None:
    """pydicom 3.0 indexes a table of 8-bit entries in uint8: stored values more than 255 above the first mapped
    value wrapped around (94 % of the pixels wrong, the mask then Dice 0.03 against the right reading, status ok)."""
    png = _chest().astype(np.int64)
    stored = png * 16  # 12 bits stored, partly below the first mapped value when first > 0
    ds = _dataset(stored, bits_stored=12)
    entries = 4096
    lut = np.arange(entries) // 16  # 8-bit entries: value -> value / 16
    item = Dataset()
    item.LUTDescriptor = [entries, first, 8]
    item.LUTData = lut.tolist()
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    index = np.clip(stored - first, 0, entries - 1)
    expected = _round(lut[index] * 255 / 255)
    assert np.array_equal(read_image(_save(ds, tmp_path / "lut8.dcm")), expected)
    assert list(ds.VOILUTSequence[0].LUTDescriptor) == [entries, first, 8]  # the descriptor is put back


def test_pixel_data_longer_than_the_header_says_and_a_zero_slope_are_refused(tmp_path: Path) -> None:
    """Columns 511 on 512 columns of data read the rows out of step (a sheared image segmented as ok, pydicom's
    "excess padding" warning naming no file); Rescale Slope 0 made a blank image. A byte or two of padding reads."""
    png = _chest()
    ds = _dataset(png)
    ds.Columns = png.shape[1] - 1
    with pytest.raises(DataError, match=r"Pixel Data holds .* more than Rows x Columns .*a wrong Rows or Columns"):
        read_image(_save(ds, tmp_path / "sheared.dcm"))
    ds = _dataset(png)
    ds.PixelData = png.tobytes() + b"\0\0"
    assert np.array_equal(read_image(_save(ds, tmp_path / "padded.dcm")), png)
    ds = _dataset(png)
    ds.RescaleSlope, ds.RescaleIntercept = 0, 100
    with pytest.raises(DataError, match="RescaleSlope 0 maps every pixel to one value"):
        read_image(_save(ds, tmp_path / "slope0.dcm"))


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    png = _chest()
    ds = _dataset(255 - png, photometric="MONOCHROME1")  # 0 displays white
    assert np.array_equal(read_image(_save(ds, tmp_path / "m1.dcm")), png)
    ds.WindowCenter, ds.WindowWidth = 128, 256  # the identity window: inversion comes after the VOI
    assert np.array_equal(read_image(_save(ds, tmp_path / "m1w.dcm")), png)


def test_rgb_dicom_reads_as_rgb(tmp_path: Path) -> None:
    isic = read_image(sample_dir("isic2017") / "images" / "ISIC_0012493.jpg")
    out = read_image(_save(_dataset(isic, photometric="RGB", sop_class=SC_STORAGE), tmp_path / "rgb.dcm"))
    assert out.shape == isic.shape and np.array_equal(out, isic)


@pytest.mark.parametrize("name", ["IM000001", "1.2.826.0.1.3680043.8.498.1"])
def test_extensionless_and_uid_named_files_and_bytes(tmp_path: Path, name: str) -> None:
    png = _chest()
    path = _save(_dataset(png), tmp_path / name)
    assert np.array_equal(read_image(path), png)
    assert np.array_equal(read_image(path.read_bytes()), png)
    assert read_image_info(path).is_dicom


# ----------------------------------------------------------------------------------------------- compressed


def _encapsulated(ds: Dataset, syntax, frame: bytes) -> Dataset:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_lossless_compressed_decodes_to_the_same_image(tmp_path: Path, syntax) -> None:
    if not get_encoder(syntax).is_available or not get_decoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} codec installed")
    png = _chest().astype(np.int64)
    stored = png * 16 + 5
    ds = _dataset(stored, bits_stored=12)
    ds.compress(syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(read_image(_save(ds, tmp_path / "c.dcm")), _minmax(stored))


def test_jpeg_baseline_decodes_like_pillow(tmp_path: Path) -> None:
    """JPEG baseline in DICOM decodes through pydicom's Pillow plugin (base install) as Pillow decodes the stream."""
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG baseline decoder")
    png = _chest()
    buf = io.BytesIO()
    Image.fromarray(png).save(buf, format="JPEG", quality=90)
    ds = _encapsulated(_dataset(png), JPEGBaseline8Bit, buf.getvalue())
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        decoded = np.asarray(im, dtype=np.uint8)
    assert np.array_equal(read_image(_save(ds, tmp_path / "j.dcm")), _minmax(decoded))


def test_missing_decoder_names_the_package(tmp_path: Path) -> None:
    """JPEG Lossless (process 14, common for X-rays) needs pylibjpeg-libjpeg or GDCM: decoded when one of them is
    installed, otherwise a one-line error with the pip command."""
    png = _chest()
    path = _save(_encapsulated(_dataset(png), JPEGLosslessSV1, b"\xff\xd8\xff\xd9"), tmp_path / "jl.dcm")
    if get_decoder(JPEGLosslessSV1).is_available:
        with pytest.raises(DataError, match="corrupt or truncated DICOM pixel data"):  # the stream is empty
            read_image(path)
        return
    with pytest.raises(DicomDecoderMissingError) as exc:
        read_image(path)
    msg = str(exc.value)
    assert isinstance(exc.value, DataError) and isinstance(exc.value, MissingDependencyError)
    assert msg.startswith(f"{path}: DICOM compressed as JPEG Lossless") and "\n" not in msg
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in msg and "python-gdcm" in msg


# ----------------------------------------------------------------------------------------------- refusals


def _multi_frame(tmp: Path) -> Path:
    ds = _dataset(np.zeros((2, 8, 8), np.uint8).reshape(16, 8))
    ds.Rows, ds.NumberOfFrames = 8, 2
    return _save(ds, tmp / "mf.dcm")


def _structured_report(tmp: Path) -> Path:
    ds = _dataset(np.zeros((4, 4), np.uint8), sop_class="1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
                    "PhotometricInterpretation", "PixelRepresentation"):  # fmt: skip
        delattr(ds, keyword)
    ds.Modality = "SR"
    return _save(ds, tmp / "sr.dcm")


def _segmentation(tmp: Path) -> Path:
    pytest.importorskip("highdicom")
    from scunext.deploy.dicom_seg import write_dicom_seg

    src = _save(_dataset(_chest()), tmp / "src.dcm")
    return write_dicom_seg(src, _chest_mask(), tmp / "seg.dcm", model_name="lungs", model_version="1")


def _truncated(tmp: Path) -> Path:
    ds = _dataset(_chest())
    ds.PixelData = ds.PixelData[:1000]
    return _save(ds, tmp / "trunc.dcm")


def _huge_header(tmp: Path) -> Path:
    ds = _dataset(np.zeros((2, 2), np.uint8))
    ds.Rows = ds.Columns = 10_000  # 100 MP declared, 4 bytes of data: refused before any decoding
    return _save(ds, tmp / "huge.dcm")


def _bits32(tmp: Path) -> Path:
    ds = _dataset(np.zeros((4, 4), np.uint8))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = np.zeros((4, 4), np.uint32).tobytes()
    return _save(ds, tmp / "b32.dcm")


def _palette(tmp: Path) -> Path:
    return _save(_dataset(np.zeros((4, 4), np.uint8), photometric="PALETTE COLOR"), tmp / "pal.dcm")


def _not_dicom(tmp: Path) -> Path:
    path = tmp / "text.dcm"
    path.write_text("hello, this is not DICOM\n" * 10)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.dcm"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_multi_frame, "multi-frame DICOM (2 frames) is not supported"),
        (_structured_report, "DICOM file holds no image (no Pixel Data) (Basic Text SR Storage)"),
        (_segmentation, "a DICOM Segmentation (SEG), not an image to segment"),
        (_truncated, "corrupt or truncated DICOM pixel data"),
        (_huge_header, "image is 10000x10000 = 100.0 megapixels, above the limit of 50 megapixels"),
        (_bits32, "DICOM with 32 bits allocated / 32 stored is not supported"),
        (_palette, "unsupported photometric interpretation 'PALETTE COLOR'"),
        (_not_dicom, "not a DICOM file (no 'DICM' preamble at byte 128"),
        (_empty, "file is empty (0 bytes)"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_bad_dicom_is_a_one_line_data_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError) as exc:
        read_image(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and message in msg and "\n" not in msg
    if make is not _empty and make is not _not_dicom:  # bytes (an upload) get the same refusal, named "image data"
        with pytest.raises(DataError, match="^image data: "):
            read_image(path.read_bytes())


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damaged values it reads
def test_damaged_files_only_ever_raise_data_error(tmp_path: Path) -> None:
    """Truncated and byte-flipped DICOM (header and pixel data): a one-line DataError or a decoded image, never
    another exception."""
    ds = _dataset(_chest()[:64, :64])
    ds.WindowCenter, ds.WindowWidth, ds.PixelSpacing = 128, 256, [0.2, 0.2]
    good = _save(ds, tmp_path / "good.dcm").read_bytes()
    rng = np.random.default_rng(0)
    damaged = [good[:n] for n in (132, 140, 200, 300, 400, 600, len(good) - 10)]
    for _ in range(40):
        data = bytearray(good)
        for pos in rng.integers(132, 700, size=3):
            data[pos] = int(rng.integers(0, 256))
        damaged.append(bytes(data))
    refused = 0
    for data in damaged:
        for call in (read_image, read_image_info):
            try:
                call(data)
            except DataError as exc:
                assert str(exc).startswith("image data: ") and "\n" not in str(exc)
                refused += 1
    assert refused >= 7  # at least every truncation is refused by read_image


def test_pixel_cap_is_configurable(tmp_path: Path) -> None:
    path = _save(_dataset(_chest()), tmp_path / "a.dcm")
    with pytest.raises(DataError, match="256x256 = 0.1 megapixels, above the limit"):
        read_image(path, max_pixels=256 * 256 - 1)
    assert read_image(path, max_pixels=256 * 256).shape == (256, 256)


# ----------------------------------------------------------------------------------------------- header only


def test_read_image_info_dicom_spacing_and_uids(tmp_path: Path) -> None:
    ds = _dataset(_chest()[:, :200])
    ds.ImagerPixelSpacing = [0.3, 0.3]
    ds.PixelSpacing = [0.2, 0.25]  # Pixel Spacing wins over Imager Pixel Spacing
    path = _save(ds, tmp_path / "a.dcm")
    info = read_image_info(path)
    assert info.size == (256, 200) and info.channels == 1 and info.format == "dicom" and info.is_dicom
    assert info.pixel_spacing_mm == (0.2, 0.25)
    assert (info.sop_instance_uid, info.sop_class_uid) == (ds.SOPInstanceUID, CR_STORAGE)
    assert (info.study_instance_uid, info.series_instance_uid) == (ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert info == read_image_info(path.read_bytes())
    del ds.PixelSpacing
    assert read_image_info(_save(ds, tmp_path / "b.dcm")).pixel_spacing_mm == (0.3, 0.3)
    del ds.ImagerPixelSpacing
    assert read_image_info(_save(ds, tmp_path / "c.dcm")).pixel_spacing_mm is None


def test_read_image_info_does_not_decode(tmp_path: Path) -> None:
    """Headers only: files whose pixel data is broken still give their info (read_image refuses them)."""
    trunc = _truncated(tmp_path)
    assert read_image_info(trunc).size == (256, 256)
    png = tmp_path / "cut.png"
    png.write_bytes((sample_dir("chest-xray-lungs") / "images" / f"{CHEST}.png").read_bytes()[:2000])
    info = read_image_info(png)
    assert (info.size, info.channels, info.format) == ((256, 256), 1, "png")
    assert info.pixel_spacing_mm is None and not info.is_dicom
    for bad in (trunc, png):
        with pytest.raises(DataError):
            read_image(bad)


def test_read_image_info_other_formats(tmp_path: Path) -> None:
    jpg = read_image_info(sample_dir("isic2017") / "images" / "ISIC_0012493.jpg")
    assert (jpg.channels, jpg.format, jpg.pixel_spacing_mm) == (3, "jpeg", None)
    assert not jpg.is_dicom and jpg.sop_instance_uid is None
    assert jpg.size == read_image(sample_dir("isic2017") / "images" / "ISIC_0012493.jpg").shape[:2]
    with pytest.raises(DataError, match="file not found"):
        read_image_info(tmp_path / "missing.png")
    with pytest.raises(DataError, match="not a readable image"):
        read_image_info(b"not an image at all")


def test_area_mm2() -> None:
    assert area_mm2(1000, (0.2, 0.25)) == pytest.approx(50.0)
    assert area_mm2(0, (0.2, 0.25)) == 0.0
    assert area_mm2(1000, None) is None
    mask = _chest_mask()
    assert area_mm2(int(mask.sum()), (0.5, 0.5)) == pytest.approx(mask.sum() / 4)


# ----------------------------------------------------------------------------------------------- discovery


def test_discovery_finds_dcm_and_extensionless_dicom(tmp_path: Path, caplog) -> None:
    png, mask = _chest(), _chest_mask()
    root = tmp_path / "data"
    uid_name = "1.2.826.0.1.3680043.8.498.7"
    (root / "masks").mkdir(parents=True)
    for name, stem in (("a.dcm", "a"), ("IM000002", "IM000002"), (uid_name, uid_name)):
        _save(_dataset(png), root / "images" / name)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
    (root / "images" / "README").write_text("not an image\n")
    with caplog.at_level("WARNING"):
        pairs = discover_pairs(root)
    assert [p.id for p in pairs] == sorted(["a", "IM000002", uid_name])
    assert "README" in caplog.text  # skipped with a warning
    ds = SegmentationDataset(pairs, in_channels=1, size=128)
    item = ds[0]
    assert item["image"].shape == (1, 128, 128) and item["orig_size"] == (256, 256)


# ----------------------------------------------------------------------------------------------- masks and SEG


@pytest.fixture(scope="module")
def lungs():
    from scunext.deploy.predictor import Predictor
    from scunext.weights import weights_dir

    return Predictor.from_run(weights_dir("lungs"))


def _clinical_chest(tmp: Path) -> tuple[Path, np.ndarray]:
    """A 12-bit MONOCHROME1 chest X-ray with rescale and window, and its 8-bit export (PS3.3 formulas)."""
    png = _chest().astype(np.int64)
    stored = 4095 - (png * 16 + 7)  # MONOCHROME1: high stored values display dark
    ds = _dataset(stored, bits_stored=12, photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept = 2, -4096
    ds.WindowCenter, ds.WindowWidth = 0, 8192
    ds.PixelSpacing = [0.5, 0.4]
    export = 255 - _linear_window(stored * 2 - 4096, 0, 8192)
    return _save(ds, tmp / "chest.dcm"), export


def test_dicom_and_its_png_export_give_the_same_mask(tmp_path: Path, lungs) -> None:
    dcm, export = _clinical_chest(tmp_path)
    png_path = tmp_path / "chest.png"
    Image.fromarray(export).save(png_path)
    from_dicom, from_png = read_image(dcm), read_image(png_path)
    assert np.array_equal(from_dicom, from_png)
    m_dicom, m_png, m_orig = lungs.predict([from_dicom, from_png, _chest()])
    assert np.array_equal(m_dicom, m_png)
    assert _dice(m_dicom, _chest_mask()) > 0.9  # read the right way up and the right polarity
    assert _dice(m_dicom, m_orig) > 0.98  # the export is the original within 12-bit rounding
    info = read_image_info(dcm)
    assert area_mm2(int(m_dicom.sum()), info.pixel_spacing_mm) == pytest.approx(m_dicom.sum() * 0.2)


def test_dicom_seg_reads_back_equal_to_the_png_mask(tmp_path: Path, lungs) -> None:
    hd = pytest.importorskip("highdicom")
    from scunext.deploy.dicom_seg import write_dicom_seg

    dcm, _ = _clinical_chest(tmp_path)
    mask = lungs.predict([read_image(dcm)])[0]
    png_path = tmp_path / "chest_mask.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(png_path)
    out = write_dicom_seg(dcm, mask, tmp_path / "out" / "chest_seg.dcm", model_name="lungs", model_version="best")
    assert out == tmp_path / "out" / "chest_seg.dcm" and sorted(p.name for p in out.parent.iterdir()) == [out.name]

    source = pydicom.dcmread(dcm)
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 1
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPClassUID == source.SOPClassUID
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1])
    assert frames.shape == (1, 256, 256, 1)
    assert np.array_equal(frames[0, :, :, 0].astype(bool), read_mask(png_path))
    raw = pydicom.dcmread(out)  # plain pydicom agrees
    assert np.array_equal(raw.pixel_array.astype(bool), read_mask(png_path))
    desc = raw.SegmentSequence[0]
    assert desc.SegmentLabel == "lung field" and desc.SegmentAlgorithmType == "AUTOMATIC"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # SCT Lung
    assert desc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # SCT Anatomical Structure
    algo = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("lungs", "best")


def test_dicom_seg_refusals(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("highdicom")
    from scunext.deploy.dicom_seg import write_dicom_seg

    src = _save(_dataset(_chest()), tmp_path / "src.dcm")
    mask = _chest_mask()
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        write_dicom_seg(src, mask, out, model_name="lungs", model_version="1")
    assert out.read_bytes() == b"keep me"
    write_dicom_seg(src, mask, out, model_name="isic2017", model_version="1", overwrite=True)
    desc = pydicom.dcmread(out).SegmentSequence[0]  # "auto" from the model name
    assert desc.SegmentLabel == "skin lesion" and desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    for bad, match in ((mask[:100], "mask is 256x100"), (mask.astype(np.uint8) * 255, "only 0 and 1"),
                       (mask[None], "must be 2-D")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            write_dicom_seg(src, bad, tmp_path / "x.dcm", model_name="m", model_version="1")
    with pytest.raises(ValueError, match="unknown segment"):
        write_dicom_seg(src, mask, tmp_path / "x.dcm", model_name="m", model_version="1", segment="liver")
    png = sample_dir("chest-xray-lungs") / "images" / f"{CHEST}.png"
    with pytest.raises(DataError, match="not a DICOM file"):
        write_dicom_seg(png, mask, tmp_path / "x.dcm", model_name="m", model_version="1")
    assert not (tmp_path / "x.dcm").exists()
    empty = write_dicom_seg(src, np.zeros_like(mask), tmp_path / "empty.dcm", model_name="m", model_version="1")
    assert pydicom.dcmread(empty).pixel_array.sum() == 0  # an empty prediction is still a valid SEG
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'scunext\[dicom-seg\]'"):
        write_dicom_seg(src, mask, tmp_path / "y.dcm", model_name="m", model_version="1")


def test_dicom_seg_output_without_highdicom_is_refused_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without the dicom-seg extra, every image was segmented and then skipped at its write (exit 1, a
    predictions.csv of skipped rows): one line naming the extra, exit 2, nothing written."""
    from scunext.cli.main import main

    stored = np.asarray(Image.open(sample_dir("chest-xray-lungs") / "images" / f"{CHEST}.png").convert("L"))
    src = _save(_dataset(stored), tmp_path / "in" / "x.dcm")
    monkeypatch.setitem(sys.modules, "highdicom", None)
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", str(src), "--format", "dicom-seg", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'scunext[dicom-seg]'" in err and "Traceback" not in err
    assert not out.exists()


def test_an_image_whose_seg_cannot_be_written_leaves_no_overlay(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--format dicom-seg``: an input whose SEG the writer refuses (a source without StudyInstanceUID) is skipped,
    and its overlay, written before the mask, went with it no more: it stayed and blocked the next run into --out
    ("1 output file(s) already exist"). The writer is a stand-in (highdicom is an optional extra)."""
    from scunext.cli.main import main
    from scunext.data.errors import DataError
    from scunext.deploy import stream

    stored = np.asarray(Image.open(sample_dir("chest-xray-lungs") / "images" / f"{CHEST}.png").convert("L"))
    good, bad = (_save(_dataset(stored), tmp_path / "in" / f"{n}.dcm") for n in ("good", "bad"))

    def writer(source, mask, out, **kwargs):
        if Path(source).name == "bad.dcm":
            raise DataError(f"{source}: DICOM source lacks StudyInstanceUID")
        Path(out).write_bytes(b"a SEG")
        return out

    monkeypatch.setattr(stream, "dicom_seg_writer", lambda: writer)
    out = tmp_path / "out"
    argv = ["predict", "--weights", "lungs", str(good), str(bad), "--format", "dicom-seg", "--out", str(out)]
    assert main(argv) == 1  # one skipped
    assert "bad.dcm: skipped: write:" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good_overlay.png", "good_seg.dcm", "predictions.csv"]
    assert main(["predict", "--weights", "lungs", str(bad), "--format", "dicom-seg", "--out", str(out)]) == 1
    assert "already exist" not in capsys.readouterr().err  # the next run is not blocked by a leftover
