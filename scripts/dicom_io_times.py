"""Time DICOM reading against PNG at chest X-ray size, and DICOM SEG writing (docs/deployment.md, "DICOM").

A 2048x2048 image is made from the shipped chest X-ray sample (upsampled), then stored as a 16-bit PNG and as
12-bit DICOM (uncompressed with a window, and RLE Lossless). Each is read with ``read_image`` and
``read_image_info``, median of ``--repeats`` runs after one warm-up; the SEG of the expert mask is written for the
uncompressed DICOM. Prints one table; ratios are to the 16-bit PNG read measured in the same run.

    OMP_WAIT_POLICY=PASSIVE python scripts/dicom_io_times.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from scunext.data import read_image, read_image_info, read_mask, sample_dir


def _dicom(stored: np.ndarray, path: Path, *, rle: bool) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench", "B1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "", "", "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CR", 1, 1
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelSpacing = [0.143, 0.143]
    ds.PixelData = stored.astype(np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def _time(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, peak traced MB of one run)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    name = "CHNCXR_0021_0"
    src = sample_dir("chest-xray-lungs")
    with Image.open(src / "images" / f"{name}.png") as im:
        big = np.asarray(im.convert("L").resize((args.size, args.size), Image.Resampling.BILINEAR), dtype=np.int64)
    stored = big * 16 + 8  # 12 bits
    mask = np.asarray(Image.fromarray(read_mask(src / "masks" / f"{name}.png")).resize((args.size, args.size)))

    from scunext.deploy.dicom_seg import write_dicom_seg

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        png16 = tmp_path / "x16.png"
        Image.fromarray(stored.astype(np.uint16)).save(png16)
        raw = _dicom(stored, tmp_path / "raw.dcm", rle=False)
        rle = _dicom(stored, tmp_path / "rle.dcm", rle=True)
        rows = []
        for label, path in (("16-bit PNG", png16), ("12-bit DICOM, window", raw), ("12-bit DICOM, RLE", rle)):
            t, peak = _time(lambda p=path: read_image(p), args.repeats)
            ti, _ = _time(lambda p=path: read_image_info(p), args.repeats)
            rows.append((f"read_image: {label}", path.stat().st_size, t, peak))
            rows.append((f"read_image_info: {label}", path.stat().st_size, ti, float("nan")))
        seg = tmp_path / "seg.dcm"

        def write() -> None:
            write_dicom_seg(raw, mask, seg, model_name="lungs", model_version="best", overwrite=True)

        t, peak = _time(write, args.repeats)
        rows.append(("write_dicom_seg (binary, 1 frame)", seg.stat().st_size, t, peak))

    import highdicom

    print(
        f"{args.size}x{args.size}; pydicom {pydicom.__version__}, highdicom {highdicom.__version__}; median of "
        f"{args.repeats} runs after a warm-up; peak = tracemalloc peak of one run (Python allocations incl. numpy); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| operation | file KB | median ms | peak MB | ratio to PNG read |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0][2]  # the 16-bit PNG read of this run
    for label, size, t, peak in rows:
        peak_s = "-" if peak != peak else f"{peak:.0f}"
        print(f"| {label} | {size / 1024:.0f} | {t * 1000:.1f} | {peak_s} | {t / base:.3f} |")


if __name__ == "__main__":
    main()
