"""Hostile DICOM (scunext.data.dicom): damaged files found by fuzzing must give one-line DataErrors and nothing else.

Each file is built here with pydicom. Besides the refusal itself, every test checks that nothing else reaches the
user: no numpy or pydicom warning (warnings are errors inside the checks), no pydicom log record (the traceback
pydicom logs for a failing decoder), and a spacing warning logged once per file, not once per read.
"""

from __future__ import annotations

import csv
import logging
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid  # noqa: E402

from scunext.data import DataError, read_image, read_image_info  # noqa: E402

# ----------------------------------------------------------------------------------------------- helpers


def _dataset(rows: int = 64, columns: int = 64) -> Dataset:
    """A CR image, 12 bits stored in 16, holding a ramp 0..4095 (so any rescale reaches the 12-bit extremes)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Hostile", "P1", "CR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.linspace(0, 4095, rows * columns).astype(np.uint16).tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when writing the invalid values these tests need
        ds.save_as(path, enforce_file_format=True)
    return path


def _set(ds: Dataset, **values) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Invalid value for VR DS: 'NaN'"
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    return ds


def _refused(source, needle: str, call=read_image) -> str:
    """The one-line DataError of ``call(source)``, checked to contain ``needle``, with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as exc:
            call(source)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg, msg
    label = "image data" if isinstance(source, bytes) else str(source)
    assert msg.startswith(f"{label}: "), msg
    return msg


def _pydicom_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pydicom")]


def _spacing_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "scunext.data.dicom" and "PixelSpacing" in r.getMessage()]


# ----------------------------------------------------------------------------------------------- 1. decoder logs


def _garbage_rle(tmp: Path) -> Path:
    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8))])
    ds["PixelData"].VR = "OB"
    return _save(ds, tmp / "rle.dcm")


def _garbage_jpeg2000(tmp: Path) -> Path:
    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])  # SOC, then a SIZ marker far too short
    ds["PixelData"].VR = "OB"
    return _save(ds, tmp / "j2k.dcm")


@pytest.mark.parametrize("make", [_garbage_rle, _garbage_jpeg2000], ids=["rle", "jpeg2000"])
def test_corrupt_compressed_pixel_data_is_one_line_and_pydicom_logs_nothing(tmp_path: Path, make, caplog) -> None:
    path = make(tmp_path)
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    with caplog.at_level(logging.DEBUG):
        if make is _garbage_jpeg2000 and not get_decoder(JPEG2000Lossless).is_available:
            _refused(path, "needs a decoder that is not installed")
        else:
            msg = _refused(path, "corrupt or truncated DICOM pixel data (")
            assert "Unable to decode" not in msg  # the decoder's own reason, not pydicom's empty first line
        _refused(path.read_bytes(), "DICOM")
    assert not _pydicom_records(caplog), [r.getMessage() for r in _pydicom_records(caplog)]
    assert pydicom_logger.level == level  # restored


def test_pydicom_log_level_is_restored_after_concurrent_failing_decodes(tmp_path: Path, caplog) -> None:
    """Threads (``serve``) decoding at once must not leave pydicom's logger silenced, nor let a record through."""
    path = _garbage_rle(tmp_path)
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    errors: list[BaseException] = []

    def decode() -> None:
        for _ in range(5):
            try:
                read_image(path)
            except DataError:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

    with caplog.at_level(logging.DEBUG):
        threads = [threading.Thread(target=decode) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and not _pydicom_records(caplog)
    assert pydicom_logger.level == level


# ----------------------------------------------------------------------------------------------- 2. rescale


@pytest.mark.parametrize(
    ("slope", "intercept"),
    [("NaN", "0"), ("1", "inf"), ("-inf", "0"), ("nan", "nan"), ("1e308", "0")],  # 1e308 * 4095 overflows
    ids=["nan-slope", "inf-intercept", "minus-inf-slope", "both-nan", "overflow"],
)
@pytest.mark.parametrize("window", [False, True], ids=["no-window", "window"])
def test_non_finite_rescale_is_a_corrupt_file_without_warnings(tmp_path, slope, intercept, window) -> None:
    ds = _set(_dataset(), RescaleSlope=slope, RescaleIntercept=intercept)
    if window:
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    path = _save(ds, tmp_path / "r.dcm")
    _refused(path, "corrupt DICOM rescale: RescaleSlope")
    _refused(path.read_bytes(), "give non-finite pixel values")
    assert read_image_info(path).size == (64, 64)  # the header itself is fine


@pytest.mark.parametrize(("centre", "width"), [("NaN", "4096"), ("2048", "inf"), ("inf", "inf")])
def test_non_finite_window_is_a_corrupt_file_without_warnings(tmp_path, centre, width) -> None:
    path = _save(_set(_dataset(), WindowCenter=centre, WindowWidth=width), tmp_path / "w.dcm")
    _refused(path, "corrupt DICOM window: WindowCenter")
    ds = _set(_dataset(), WindowCenter=["2048", centre], WindowWidth=["4096", width])  # only the first is used
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(_save(ds, tmp_path / "w2.dcm")).max() == 255


def test_finite_rescale_and_window_still_read_with_warnings_as_errors(tmp_path) -> None:
    ds = _set(_dataset(), RescaleSlope="2", RescaleIntercept="-1024", WindowCenter="3000", WindowWidth="4000")
    path = _save(ds, tmp_path / "ok.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_image(path)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


# ----------------------------------------------------------------------------------------------- 3, 4. spacing


@pytest.mark.parametrize(
    "spacing",
    [
        ["1e300", "1e300"],
        ["0.2", "1e300"],
        ["200", "200"],
        ["0.2", "0.00001"],
        ["inf", "0.2"],
        ["nan", "0.2"],
        ["-0.2", "0.2"],
        ["0", "0.2"],
    ],
    ids=lambda v: "x".join(v),
)
def test_absurd_pixel_spacing_is_ignored_like_a_negative_one(tmp_path, spacing, caplog) -> None:
    path = _save(_set(_dataset(), PixelSpacing=spacing), tmp_path / "s.dcm")
    with caplog.at_level(logging.WARNING, logger="scunext.data.dicom"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image_info(path).pixel_spacing_mm is None
    assert "ignoring a PixelSpacing" in caplog.text and "not a physical spacing" in caplog.text
    ds = _set(_dataset(), PixelSpacing=spacing, ImagerPixelSpacing=["0.3", "0.3"])  # the fallback still applies
    assert read_image_info(_save(ds, tmp_path / "i.dcm")).pixel_spacing_mm == (0.3, 0.3)


def test_spacing_bounds_themselves_are_physical(tmp_path) -> None:
    from scunext.data.dicom import SPACING_RANGE_MM

    low, high = SPACING_RANGE_MM
    path = _save(_set(_dataset(), PixelSpacing=[repr(low), repr(high)]), tmp_path / "b.dcm")
    assert read_image_info(path).pixel_spacing_mm == (low, high)


def test_a_bad_spacing_is_warned_about_once_per_file(tmp_path, caplog) -> None:
    """predict and serve read the header (read_image_info) and then the image (read_image); a DICOM SEG also
    re-reads the source's header. The warning comes from the first read only."""
    path = _save(_set(_dataset(), PixelSpacing=["-0.2", "0.2"]), tmp_path / "neg.dcm")
    with caplog.at_level(logging.WARNING, logger="scunext.data.dicom"):
        read_image_info(path)
        read_image(path)
        read_image(path.read_bytes())
    assert len(_spacing_warnings(caplog)) == 1, caplog.text
    pytest.importorskip("highdicom")
    from scunext.deploy.dicom_seg import write_dicom_seg

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scunext.data.dicom"):
        write_dicom_seg(path, np.zeros((64, 64), bool), tmp_path / "neg_seg.dcm", model_name="m", model_version="1")
    assert not _spacing_warnings(caplog)


# ----------------------------------------------------------------------------------------------- 5. truncation


def _cuts(tmp: Path) -> dict[str, bytes]:
    """The same file cut inside its file meta, just after it, inside Patient Name, and inside its Pixel Data."""
    good = _save(_dataset(), tmp / "good.dcm").read_bytes()
    full = pydicom.dcmread(tmp / "good.dcm")
    meta_end = 144 + int(full.file_meta.FileMetaInformationGroupLength)
    name_at = full.get_item("PatientName").value_tell
    return {"meta": good[:200], "after-meta": good[:meta_end], "name": good[: name_at + 3], "pixels": good[:-100]}


@pytest.mark.parametrize("where", ["meta", "after-meta", "name"])
def test_a_file_cut_in_its_header_is_reported_as_truncated(tmp_path, where) -> None:
    from scunext.deploy.stream import image_info

    path = tmp_path / f"cut_{where}.dcm"
    path.write_bytes(_cuts(tmp_path)[where])
    for call in (read_image_info, read_image):
        _refused(path, "truncated DICOM file (", call)
        _refused(path.read_bytes(), "truncated DICOM file (", call)
    msg = _refused(path, "truncated DICOM file (", image_info)  # what predict reports for it
    assert "empty size" not in msg


def test_a_file_cut_in_its_pixel_data_keeps_its_header_and_is_refused_at_decode(tmp_path) -> None:
    path = tmp_path / "cut_pixels.dcm"
    path.write_bytes(_cuts(tmp_path)["pixels"])
    assert read_image_info(path).size == (64, 64)  # predict plans it, then skips it at decode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: "The number of bytes of pixel data is less ..."
        with pytest.raises(DataError, match="corrupt or truncated DICOM pixel data"):
            read_image(path)


# ----------------------------------------------------------------------------------------------- through predict


def test_predict_skips_hostile_dicom_with_one_line_each_and_nothing_else(tmp_path, capsys, caplog) -> None:
    from scunext.cli.main import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    _garbage_rle(inputs)
    _save(_set(_dataset(256, 256), RescaleSlope="NaN", RescaleIntercept="0"), inputs / "nan.dcm")
    _save(_set(_dataset(256, 256), PixelSpacing=["1e300", "1e300"]), inputs / "huge.dcm")
    _save(_set(_dataset(256, 256), PixelSpacing=["-0.2", "0.2"]), inputs / "neg.dcm")
    out = tmp_path / "out"
    caplog.clear()  # pydicom logs the invalid values written above
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        code = main(["predict", "--weights", "lungs", str(inputs), "--out", str(out), "--no-overlay"])
    assert code == 1
    assert not [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not _pydicom_records(caplog)
    assert len(_spacing_warnings(caplog)) == 2, caplog.text  # huge and neg, once each
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = {Path(r["file"]).name: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert rows["rle.dcm"]["status"].startswith("skipped: decode: corrupt or truncated DICOM pixel data")
    assert rows["nan.dcm"]["status"].startswith("skipped: decode: corrupt DICOM rescale")
    for name in ("huge.dcm", "neg.dcm"):
        assert rows[name]["status"] == "ok" and rows[name]["area_mm2"] == ""


def test_decode_reasons_carry_no_python_object_reprs():
    """A web client was told "... cannot identify image file <_io.BytesIO object at 0x7f3dde0a5670>"."""
    from scunext.data.dicom import _decode_reason, _reason

    exc = ValueError("Unable to decode as exceptions were raised by all available plugins:\n"
                     "  pillow: cannot identify image file <_io.BytesIO object at 0x7f3dde0a5670>")  # fmt: skip
    assert _decode_reason(exc) == "pillow: cannot identify image file the data"
    assert "0x" not in _reason(OSError("cannot open <_io.BufferedReader object at 0x7f00aa>"))
