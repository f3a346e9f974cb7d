"""Streaming prediction: image files -> mask files, with memory that does not depend on the number of files.

Two steps:

1. :func:`plan_predictions` checks every input cheaply before anything is written: it exists, it is an image (a
   header read, :func:`image_info`, no pixel decode), it is within the pixel cap, and no output would replace an
   existing file (unless ``overwrite``). Earlier outputs of this tool in an input folder (``*_mask.png``,
   ``*_overlay.png``, ``*_seg.dcm``) are never taken as inputs, and the output folder may not be an input folder
   (or inside one).
2. :func:`stream_predict` runs a bounded pipeline. ``workers`` threads decode files and prepare them
   (:meth:`Predictor.prepare <scunext.deploy.predictor.Predictor.prepare>`; with ``fast_decode`` and no overlay,
   JPEGs are decoded at reduced size, about twice the model's, with Pillow's draft mode). The calling
   thread runs the model on batches (:meth:`Predictor.logits <scunext.deploy.predictor.Predictor.logits>`). The
   same worker threads then upsample each image's logits to its own size, threshold them and write the mask (PNG
   or DICOM SEG) and the overlay. At most ``2 * batch_size + 2 * workers`` images are in flight at any time,
   whatever the number of files, and the full-size images kept for overlays hold at most
   :data:`MAX_KEPT_BYTES`. A file that fails mid-way (corrupt pixel data, a write error) gives a ``status``
   other than ``ok`` in its :class:`PredictionRecord` and the others go on.

Pillow's decoders, its resampling and PNG encoding, zlib and PyTorch's kernels release the GIL, so threads
use both cores without copying images between processes.

Files are written under a hidden temporary name and then linked to their final name, which fails if the name
exists: an output is never half-written under its final name and, without ``overwrite``, never replaces a file that
appeared after the plan was made.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from PIL import Image

from scunext.data.dataset import IMAGE_EXTENSIONS, image_id, is_image_file
from scunext.data.errors import DataError
from scunext.data.io import MAX_IMAGE_PIXELS, area_mm2, read_image, read_image_info
from scunext.deploy.predictor import Predictor
from scunext.deploy.quality import quality_from_logits
from scunext.errors import shown
from scunext.runs.durable import writer_gone
from scunext.visualize import overlay as make_overlay

__all__ = [
    "FORMATS",
    "MAX_BATCH_SIZE",
    "MAX_WORKERS",
    "OUTPUT_SUFFIXES",
    "CSV_NAME",
    "OutputExistsError",
    "PredictJob",
    "PredictionRecord",
    "PredictionsCSV",
    "finished_masks",
    "FinishedMask",
    "complete_length",
    "image_info",
    "plan_predictions",
    "printable",
    "stream_predict",
]

log = logging.getLogger(__name__)

#: ``--format`` values: PNG masks (0/255, 8-bit gray) or DICOM Segmentation objects (DICOM inputs only)
FORMATS = ("png", "dicom-seg")
#: file-name endings of this tool's outputs, by kind; files ending so in an input folder are not taken as inputs
OUTPUT_SUFFIXES = {"png": "_mask.png", "dicom-seg": "_seg.dcm", "overlay": "_overlay.png"}
#: the per-image table written next to the masks
CSV_NAME = "predictions.csv"
#: zlib level of the PNG outputs: 1 encodes a binary mask about 2.5x faster than Pillow's default 6 for files about
#: 1.5x larger (2048x2048 mask, docs/deployment.md)
PNG_COMPRESS_LEVEL = 1
#: bytes of full-size pixels that the pipeline may hold for overlays (counted as the RGB overlay's size): about 4
#: images of 4000x3000, 13 of 2048x2048; the count bound (2 x batch + 2 x workers) applies on top
MAX_KEPT_BYTES = 160 * 2**20
#: the longest file name (bytes) that Linux, macOS and Windows file systems accept
MAX_NAME_BYTES = 255
#: the largest ``batch_size`` and ``workers`` accepted: the images in flight (2 x batch + 2 x workers) and the decodes
#: running at once grow with them, and beyond these nothing gets faster on any CPU we know of
MAX_BATCH_SIZE = 512
MAX_WORKERS = 64
#: with ``fast_decode`` and without overlays, JPEGs are decoded at the smallest DCT scale with both sides >=
#: DRAFT_FACTOR x the model's input size, then area-resized as usual. 2 rather than 1: half the mask differences
#: against a full decode, for 1.5x the decode time of the smallest scale (still about 5x faster than a full decode
#: of a 4000x3000 JPEG; docs/deployment.md)
DRAFT_FACTOR = 2
_SHOW = 5


class OutputExistsError(ValueError):
    """Outputs would replace existing files (and ``overwrite`` was not given)."""


# ----------------------------------------------------------------------------------------------- image headers


def image_info(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Header-only facts about an image file (no pixel decode): ``size`` (H, W), ``channels``, ``format``,
    ``pixel_spacing_mm`` ((row, col) in mm, or None) and ``is_dicom``.

    :func:`scunext.data.io.read_image_info` plus the pixel cap. Raises :class:`DataError` for a missing, unreadable
    or oversized file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    info = read_image_info(path)
    height, width = info.size
    if height < 1 or width < 1:
        raise DataError(f"{path}: image has an empty size {width}x{height}")
    if height * width > max_pixels:
        raise DataError(f"{path}: image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit "
                        f"of {max_pixels / 1e6:g} megapixels (possible decompression bomb)")  # fmt: skip
    return info


# --------------------------------------------------------------------------------------------------- the plan


@dataclass
class PredictJob:
    """One input file and the files it will produce.

    Attributes:
        source: the input image.
        info: its header facts (:func:`image_info`).
        mask: the mask file (``NAME_mask.png`` or ``NAME_seg.dcm``).
        overlay: the overlay PNG, or None without overlays.
    """

    source: Path
    info: Any
    mask: Path
    overlay: Path | None = None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.mask, self.overlay) if p is not None]


def _is_output_name(name: str) -> bool:
    return any(name.endswith(s) for s in OUTPUT_SUFFIXES.values())


def _scan_folder(folder: Path) -> tuple[list[Path], int]:
    """Image files in ``folder`` (not recursive, hidden files skipped) and how many earlier outputs were left out;
    other files (``.gif``, ``.webp``, notes) are left out with a log line naming a few, so that none goes missing
    without a word (given by name, any file Pillow reads is segmented)."""
    found, outputs, others = [], 0, []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        if is_image_file(f):  # an image extension, or any file with the DICOM preamble (PACS exports)
            if _is_output_name(f.name):
                outputs += 1
            else:
                found.append(f)
        elif len(others) <= _SHOW:
            others.append(f.name)
    if others:
        log.info("%s: left out file(s) without an image extension (%s): %s; give a file by name to segment it "
                 "anyway", folder, ", ".join(IMAGE_EXTENSIONS), _examples(others))  # fmt: skip
    return found, outputs


def _examples(items: Sequence[Any]) -> str:
    return ", ".join(str(i) for i in items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_predictions(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    fmt: str = "png",
    overlay: bool = True,
    overwrite: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
    skip_done: bool = False,
    model: str | None = None,
) -> list[PredictJob]:
    """Check every input and name every output, before anything is decoded or written.

    Args:
        inputs: image files and folders of images (folders are not searched recursively).
        out: the output folder (created by :func:`stream_predict`; nothing is created here).
        fmt: one of :data:`FORMATS`; ``dicom-seg`` needs every input to be DICOM.
        overlay: plan ``NAME_overlay.png`` files too.
        overwrite: allow outputs to replace existing files (``predictions.csv`` is appended to either way, when it
            has today's columns).
        max_pixels: refuse larger images (header size).
        skip_done: continue a stopped run: leave out every input that an earlier run into ``out`` finished (its
            mask exists and ``predictions.csv`` has its ``ok`` row); the outputs that a stopped run left of the
            other inputs (written before their row) are theirs to replace. Not together with ``overwrite``.
        model: the ``model`` column this run writes (:class:`PredictionRecord`); with ``skip_done``, masks that
            ``predictions.csv`` records as another model's (or settings') are an error, not a finished part of this
            run. None: not checked.

    Returns:
        One :class:`PredictJob` per input file, in input order (folders sorted by name).

    Raises:
        ValueError: ``out`` is a file or an input folder (or inside one), an input folder holds no images,
            two inputs share a name, ``fmt`` is unknown or an input is not DICOM for ``dicom-seg``.
        DataError: a missing, unreadable or oversized input (the message counts them and names the first few).
        OutputExistsError: outputs would replace existing files (the message counts them and names the first few).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    if skip_done and overwrite:
        raise ValueError("--skip-done keeps what an earlier run finished and --overwrite replaces it; give one")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is an existing file, not a folder")
    out_resolved = out.resolve()
    files: list[Path] = []
    skipped_outputs = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if _inside(out_resolved, path.resolve()):
                raise ValueError(f"output folder {out} is the input folder {path} or inside it; give another --out")
            found, n_out = _scan_folder(path)
            skipped_outputs += n_out
            if not found:
                raise DataError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                                + (f"; {n_out} earlier scunext outputs left out" if n_out else ""))  # fmt: skip
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if skipped_outputs:
        log.info("left out %d file(s) named like scunext outputs (%s)", skipped_outputs,
                 ", ".join("*" + s for s in OUTPUT_SUFFIXES.values()))  # fmt: skip
    stems: dict[str, Path] = {}
    for f in files:
        name = image_id(f)
        if name in stems:
            raise ValueError(f"several inputs share the name {name!r} ({stems[name]}, {f}); their outputs would "
                             "overwrite each other")  # fmt: skip
        stems[name] = f

    jobs, bad = [], []
    for f in files:
        try:
            info = image_info(f, max_pixels)
        except DataError as exc:
            bad.append(str(exc))
            continue
        mask = out / f"{image_id(f)}{OUTPUT_SUFFIXES[fmt]}"
        jobs.append(PredictJob(f, info, mask, out / f"{image_id(f)}{OUTPUT_SUFFIXES['overlay']}" if overlay else None))
    if bad:
        for reason in bad if len(bad) > 3 else ():  # the whole list, for a fix in one go (shown with -v)
            log.debug("cannot be read: %s", reason)
        head = f"{len(bad)} of {len(files)} inputs cannot be read" if len(bad) > 1 else bad[0]
        raise DataError(head if len(bad) == 1 else f"{head}: {'; '.join(bad[:3])}"
                        + (f"; ... (all {len(bad)} listed with -v)" if len(bad) > 3 else ""))  # fmt: skip
    if fmt == "dicom-seg":
        not_dicom = [j.source for j in jobs if not getattr(j.info, "is_dicom", False)]
        if not_dicom:
            raise ValueError(f"--format dicom-seg needs DICOM inputs; {len(not_dicom)} of {len(jobs)} are not: "
                             f"{_examples(not_dicom)}")  # fmt: skip
        dicom_seg_writer()  # the writer and its packages are there, before anything is written
    too_long = [p.name for j in jobs for p in j.outputs if len(os.fsencode(p.name)) > MAX_NAME_BYTES]
    if too_long:
        raise ValueError(f"{len(too_long)} output name(s) would be longer than the {MAX_NAME_BYTES} bytes a file "
                         f"name may have: {_examples(too_long)}; shorten those input names")  # fmt: skip
    sources = {f.resolve() for f in files}
    clash = [p for j in jobs for p in j.outputs if p.resolve() in sources]
    if clash:  # `predict scans/*.png --out scans`: a.png's mask is the input a_mask.png of the run before
        raise ValueError(f"{len(clash)} output(s) would replace input file(s): {_examples([p.name for p in clash])}"
                         " in the inputs; give another --out, or leave earlier outputs out of the inputs")
    if skip_done:
        done = finished_masks(out / CSV_NAME)
        finished = [j for j in jobs if printable(j.mask.name) in done and j.mask.exists()]
        elsewhere = [j for j in finished if not _same_input(done[printable(j.mask.name)].file, j.source)]
        if elsewhere:  # PACS exports repeat names (IM0001) in every series folder: another image's mask
            j = elsewhere[0]
            raise ValueError(f"--skip-done: {len(elsewhere)} of the finished masks in {out} were made from other "
                             f"inputs of the same name ({j.mask.name} from {shown(done[printable(j.mask.name)].file)}"
                             f", not {shown(str(j.source))}); give each series its own --out")  # fmt: skip
        others = sorted({done[printable(j.mask.name)].model for j in finished} - {model})
        if model is not None and others:
            n = sum(done[printable(j.mask.name)].model != model for j in finished)
            raise ValueError(f"--skip-done: {n} of the finished masks in {out} were made by {shown(others[0])}"
                             f"{f' and {len(others) - 1} other setting(s)' if len(others) > 1 else ''}, not by "
                             f"this run's {shown(model)}; continue with the same model and settings, or use "
                             "--overwrite or another --out")  # fmt: skip
        left_out = {id(j) for j in finished}
        todo = [j for j in jobs if id(j) not in left_out]
        log.info("%s: %d of %d input(s) finished by an earlier run, left out (--skip-done)", out,
                 len(jobs) - len(todo), len(jobs))  # fmt: skip
        jobs = todo
        replaced = [p for j in jobs for p in j.outputs if p.exists()]
        if replaced:  # what a stopped run wrote before recording the image (or a file of that name put there)
            log.warning("%s: %d file(s) of unfinished inputs will be replaced (--skip-done): %s", out, len(replaced),
                        _examples([p.name for p in replaced]))  # fmt: skip
    existing = [p for j in jobs for p in j.outputs if p.exists()]
    if (out / CSV_NAME).is_dir():
        raise OutputExistsError(f"{out / CSV_NAME} is a folder; the predictions table cannot be written there: move "
                                "it away or choose another --out")  # fmt: skip
    if (out / CSV_NAME).exists() and not PredictionsCSV.appendable(out / CSV_NAME):
        if skip_done:
            raise OutputExistsError(f"{out / CSV_NAME}: is not a predictions table of this version, so it cannot "
                                    "say which inputs are finished; --skip-done needs the table of the earlier run")
        existing.append(out / CSV_NAME)
    if existing and not overwrite and not skip_done:
        raise OutputExistsError(f"{len(existing)} output file(s) already exist and would be replaced: "
                                f"{_examples([p.name for p in existing])} in {out}; pass --overwrite to replace "
                                "them, or choose another --out")  # fmt: skip
    return jobs


# ------------------------------------------------------------------------------------------------ the results


@dataclass
class PredictionRecord:
    """One image's result: one row of ``predictions.csv``.

    The CSV columns are these fields, in this order. To add a column (e.g. a quality score), add a field with a
    default here and fill it in :func:`_measure`, which sees the mask, the low-resolution logits and the header.
    """

    file: str
    mask: str = ""
    height: int | None = None
    width: int | None = None
    area_px: int | None = None
    area_mm2: float | None = None
    score: float | None = None
    review: bool | None = None
    review_reason: str = ""
    status: str = "ok"
    model: str = ""  # what made the mask: weights or run, threshold, engine (``--skip-done`` continues only its own)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def row(self) -> dict[str, str]:
        """The CSV row: ``None`` as an empty cell, floats with 6 significant digits, text :func:`printable`."""
        out = {}
        for name in self.columns():
            value = getattr(self, name)
            out[name] = "" if value is None else f"{value:.6g}" if isinstance(value, float) else printable(str(value))
        return out


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not UTF-8 on disk (Python holds its bytes as lone surrogates,
    which cannot be written to a UTF-8 file or terminal) shows those bytes as ``\\xNN`` escapes; other text is
    returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _measure(record: PredictionRecord, mask: np.ndarray, logits: torch.Tensor, info: Any,
             flipped: torch.Tensor | None = None, predictor: Predictor | None = None) -> None:  # fmt: skip
    """Fill the measured columns of ``record``: the one place where per-image numbers are computed.

    Args:
        mask: bool ``(H, W)`` at the input's size.
        logits: the model's ``(1, size, size)`` foreground logits.
        info: the input's header facts (:func:`image_info`).
        flipped: the logits of the horizontally flipped input, flipped back (``(1, size, size)``), for the quality
            score; None: no score.
        predictor: gives the quality calibration (``quality.json`` of the run) and the threshold.
    """
    record.area_px = int(np.count_nonzero(mask))
    spacing = getattr(info, "pixel_spacing_mm", None)
    record.area_mm2 = area_mm2(record.area_px, spacing)
    if flipped is not None and predictor is not None:
        # at the model's input size: the calibration data (256x256 images) was scored at that size too
        q = quality_from_logits(logits, flipped, predictor.quality, predictor.threshold)
        record.score, record.review, record.review_reason = round(q.score, 4), q.review, q.reason


@dataclass(frozen=True)
class FinishedMask:
    """What ``predictions.csv`` records of a mask written by an earlier run: the input it was made from and the
    ``model`` (weights, threshold, engine) that made it."""

    file: str
    model: str


def complete_length(path: str | os.PathLike[str]) -> int:
    """Bytes of ``path`` up to the end of its last complete CSV row: a row cut short by a crash (power loss, a full
    disk) ends without its line break, or inside a quoted field (a quote left open would swallow the next run's
    first row into that field). Read line by line: a record ends at a line break outside quotes (CSV doubles the
    quotes inside a field, so counting them tells)."""
    end = pos = quotes = 0
    with open(path, "rb") as fh:
        for line in fh:
            pos += len(line)
            quotes += line.count(b'"')
            if line.endswith(b"\n") and quotes % 2 == 0:
                end = pos
    return end


def _complete_rows(fh: Any, length: int) -> Any:
    """The text lines of ``fh`` within its first ``length`` bytes (an open binary file)."""
    read = 0
    for line in fh:
        if read >= length:
            return
        read += len(line)
        yield line.decode("utf-8", errors="replace")


def finished_masks(table: str | os.PathLike[str]) -> dict[str, FinishedMask]:
    """The file names of the masks that ``predictions.csv`` records as written (``status`` ok), each with the input
    and ``model`` of its latest row; empty if there is no table. Read row by row (a table of millions of rows is not
    held in memory, only the names); an unfinished last row (a run killed while writing it) does not count."""
    path, names = Path(table), {}
    if not path.is_file():
        return names
    with path.open("rb") as fh:
        for row in csv.DictReader(_complete_rows(fh, complete_length(path))):
            if row.get("status") == "ok" and row.get("mask") and None not in row and None not in row.values():
                names[PurePath(row["mask"]).name] = FinishedMask(row.get("file") or "", row.get("model") or "")
    return names


def _same_input(recorded: str, source: Path) -> bool:
    """Whether a row's ``file`` names the input ``source`` (as given then and now, or the same file on disk)."""
    if recorded in (str(source), printable(str(source))):
        return True
    try:
        return Path(recorded).resolve() == source.resolve()
    except (OSError, ValueError):
        return False


class PredictionsCSV:
    """``predictions.csv``, written row by row (flushed, so a crash keeps the rows done); a context manager.

    An existing file with the same header is appended to, never replaced: the table then keeps every run into the
    folder, and the last row of a file is its latest result. If its last row is unfinished (a crash while writing
    it: no line break at its end, or a quoted field left open), that torn row is cut off (:func:`complete_length`)
    and its input counts as not done. Any other existing file is an error, unless
    ``replace`` (``--overwrite``, which the planner asked for): then a new table replaces it.
    """

    def __init__(self, path: str | os.PathLike[str], replace: bool = False) -> None:
        self.path = Path(path)
        append = self.path.exists() and self.appendable(self.path)
        if self.path.exists() and not append and not replace:
            raise OutputExistsError(f"{self.path}: exists and is not a predictions table of this version; pass "
                                    "--overwrite to replace it, or choose another --out")  # fmt: skip
        self._fh = self.path.open("a" if append else "w" if replace else "x", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=PredictionRecord.columns())
        if not append:
            self._writer.writeheader()
        elif (keep := complete_length(self.path)) < self.path.stat().st_size:
            log.warning("%s: its last row is unfinished (a run stopped while writing it); it is removed, and that "
                        "input counts as not done", self.path)  # fmt: skip
            self._fh.truncate(keep)

    @staticmethod
    def appendable(path: Path) -> bool:
        """Whether ``path`` is a predictions table with today's columns (rows can be appended to it)."""
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return next(csv.reader(fh), None) == PredictionRecord.columns()
        except (OSError, UnicodeDecodeError, csv.Error):
            return False

    def write(self, record: PredictionRecord) -> None:
        self._writer.writerow(record.row())
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PredictionsCSV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------- the pipeline


@dataclass
class _Decoded:
    x: torch.Tensor  # prepared (C, size, size)
    image: np.ndarray | None  # full-size pixels, kept only for the overlay


@dataclass
class _Slot:
    """An input's place in the output order: a record, a pending write, or None while its batch is being filled."""

    job: PredictJob
    result: PredictionRecord | Future[PredictionRecord] | None = None
    kept_bytes: int = 0  # full-size pixels held for the overlay, counted against MAX_KEPT_BYTES


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _failed(job: PredictJob, stage: str, exc: BaseException) -> PredictionRecord:
    log.debug("%s: %s failed", job.source, stage, exc_info=exc)
    h, w = job.info.size
    reason = _reason(exc)
    prefix = f"{job.source}: "
    reason = reason[len(prefix) :] if reason.startswith(prefix) else reason
    return PredictionRecord(str(job.source), height=h, width=w, status=f"skipped: {stage}: {reason}")


def _decode(predictor: Predictor, job: PredictJob, draft_size: int | None, keep: bool) -> _Decoded:
    image = read_image(job.source, draft_size=draft_size)
    if draft_size is None and image.shape[:2] != tuple(job.info.size):
        raise DataError(f"{job.source}: image is {image.shape[1]}x{image.shape[0]}, its header said "
                        f"{job.info.size[1]}x{job.info.size[0]}")  # fmt: skip
    return _Decoded(predictor.prepare(image), image if keep else None)


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Give ``tmp`` its final name: atomically, and without ``overwrite`` never replacing an existing file."""
    try:
        if overwrite:
            os.replace(tmp, final)
            return
        try:
            os.link(tmp, final)  # fails with FileExistsError if ``final`` appeared meanwhile
        except FileExistsError:
            raise OutputExistsError(f"{final}: appeared during the run; not replaced") from None
        except OSError:  # a file system without hard links
            if final.exists():
                raise OutputExistsError(f"{final}: appeared during the run; not replaced") from None
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


_TMP_COUNT = itertools.count()
#: ``.scunext-PID-N.tmp.png`` / ``.tmp.dcm``: the temporary name of an output (see :func:`_tmp_name`)
_TMP_PATTERN = re.compile(r"^\.scunext-(?P<pid>\d+)-\d+\.tmp\.(png|dcm)$")


def _tmp_name(final: Path) -> Path:
    """A hidden, short temporary name beside ``final``, with its suffix (an input's name may be as long as the file
    system allows, and a name built from it would not fit); unique within the process by a counter."""
    return final.with_name(f".scunext-{os.getpid()}-{next(_TMP_COUNT)}.tmp{final.suffix}")


def _remove_orphan_temps(folder: Path) -> None:
    """Remove the hidden temporary outputs that a killed run (SIGKILL, power loss: no cleanup) left in ``folder``;
    those of a run still writing there are kept."""
    removed = 0
    for p in folder.iterdir():
        m = _TMP_PATTERN.match(p.name) if p.name.startswith(".scunext-") else None
        if m and writer_gone(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("%s: removed %d temporary file(s) that a stopped run left", folder, removed)


def _save_png(pixels: np.ndarray, final: Path, overwrite: bool) -> None:
    tmp = _tmp_name(final)
    try:
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _publish(tmp, final, overwrite)


@dataclass
class _WriteSpec:
    fmt: str
    overwrite: bool
    model_name: str
    model_version: str
    seg_writer: Any = field(default=None, repr=False)
    segment: str = "auto"


def _write(predictor: Predictor, job: PredictJob, logits: torch.Tensor, image: np.ndarray | None,
           spec: _WriteSpec, flipped: torch.Tensor | None = None) -> PredictionRecord:  # fmt: skip
    h, w = job.info.size
    mask = predictor.mask_from_logits(logits, (h, w))
    overlay = job.overlay is not None and image is not None
    if overlay:  # before the mask: an image's mask is written last
        _save_png(make_overlay(image, mask), job.overlay, spec.overwrite)
    try:
        if spec.fmt == "png":
            _save_png(mask.view(np.uint8) * np.uint8(255), job.mask, spec.overwrite)
        else:
            tmp = _tmp_name(job.mask)
            try:
                written = spec.seg_writer(job.source, mask, tmp, model_name=spec.model_name,
                                          model_version=spec.model_version, segment=spec.segment)  # fmt: skip
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _publish(Path(written) if written else tmp, job.mask, spec.overwrite)
    except Exception:  # the image is skipped: no overlay of it stays behind to block the next run into --out
        if overlay:
            job.overlay.unlink(missing_ok=True)
        raise
    record = PredictionRecord(str(job.source), str(job.mask), h, w)
    _measure(record, mask, logits, job.info, flipped, predictor)
    return record


def _safe_write(predictor: Predictor, job: PredictJob, logits: torch.Tensor, image: np.ndarray | None,
                spec: _WriteSpec, flipped: torch.Tensor | None = None) -> PredictionRecord:  # fmt: skip
    try:
        return _write(predictor, job, logits, image, spec, flipped)
    except Exception as exc:  # reported in the record; the other files go on
        return _failed(job, "write", exc)


def dicom_seg_writer() -> Any:
    """``scunext.deploy.dicom_seg.write_dicom_seg``, imported on first use (it raises ``MissingDependencyError``
    naming the ``dicom-seg`` extra when highdicom is not installed)."""
    from scunext.deploy.dicom_seg import write_dicom_seg

    return write_dicom_seg


def _one_thread() -> None:
    torch.set_num_threads(1)


def stream_predict(
    predictor: Predictor,
    jobs: Sequence[PredictJob],
    *,
    batch_size: int = 8,
    workers: int = 2,
    fmt: str = "png",
    overwrite: bool = False,
    model_version: str = "",
    quality: bool = True,
    model_name: str | None = None,
    segment: str = "auto",
    fast_decode: bool = False,
) -> Iterator[PredictionRecord]:
    """Segment ``jobs`` (from :func:`plan_predictions`) and write their outputs; yields one record per job, in order.

    Memory is bounded by the number of images in flight (at most ``2 * batch_size + 2 * workers``), not by the
    number of jobs. A file whose pixels cannot be decoded, or whose outputs cannot be written, gives a record with a
    ``status`` starting ``skipped:`` and is not fatal; an error of the model itself propagates.

    Args:
        predictor: the model and its preprocessing.
        jobs: the planned inputs and outputs; overlays are written for jobs that have an ``overlay`` path.
        batch_size: images per model call.
        workers: decode/write threads.
        fmt: ``png`` or ``dicom-seg`` (:func:`scunext.deploy.dicom_seg.write_dicom_seg`).
        overwrite: let outputs replace existing files (the plan has already refused them otherwise).
        model_version: recorded in DICOM SEG outputs.
        model_name: the algorithm name recorded in DICOM SEG outputs (default: the architecture, ``predictor.name``;
            ``scunext predict --weights NAME`` gives the weights' name).
        segment: what the DICOM SEG segment is coded as (:data:`scunext.deploy.dicom_seg.SEGMENTS`; ``auto``: from
            ``model_name``).
        quality: also score each prediction (``score``, ``review``; :mod:`scunext.deploy.quality`): one more
            forward pass per image, of the horizontally flipped input.
        fast_decode: decode the JPEGs of jobs without an overlay at reduced size (:data:`DRAFT_FACTOR` x the
            model's size, :func:`~scunext.data.io.read_image`'s ``draft_size``): several times cheaper for large
            photos, but the model then sees slightly other pixels than ``evaluate`` and the default decode, so the
            mask can move along its boundary (docs/deployment.md). Off by default: a mask depends on the image and
            the model only, not on an output option.
    """
    for name, value, most in (("batch_size", batch_size, MAX_BATCH_SIZE), ("workers", workers, MAX_WORKERS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ValueError(f"{name} must be an integer from 1 to {most}, got {value!r}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    for folder in {p.parent for j in jobs for p in j.outputs}:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_orphan_temps(folder)
    spec = _WriteSpec(fmt, overwrite, model_name or predictor.name, model_version,
                      dicom_seg_writer() if fmt == "dicom-seg" else None, segment)  # fmt: skip
    lookahead = max(batch_size, workers)  # decodes queued or running
    max_slots = 2 * batch_size + 2 * workers  # images between decode and the end of their write
    kept = 0  # bytes of full-size images held for overlays (and of the overlays), at most MAX_KEPT_BYTES
    # one PyTorch thread per worker (PyTorch's thread count is per calling thread): the workers are the parallelism,
    # and the model keeps the calling thread's setting
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scunext-predict", initializer=_one_thread)
    decoding: deque[tuple[_Slot, Future[_Decoded]]] = deque()
    slots: deque[_Slot] = deque()
    batch: list[tuple[_Slot, _Decoded]] = []
    pending = iter(jobs)
    exhausted = False

    upcoming: list[PredictJob] = []

    def top_up() -> None:
        nonlocal exhausted, kept
        while not exhausted and len(decoding) < lookahead and len(slots) + len(decoding) < max_slots:
            if not upcoming:
                job = next(pending, None)
                if job is None:
                    exhausted = True
                    return
                upcoming.append(job)
            job = upcoming[0]
            keep = job.overlay is not None
            cost = 3 * int(job.info.size[0]) * int(job.info.size[1]) if keep else 0  # the RGB overlay's size
            if cost and kept + cost > MAX_KEPT_BYTES and (slots or decoding):
                return  # wait until earlier images are written (one image alone may exceed the budget)
            upcoming.pop()
            kept += cost
            draft = DRAFT_FACTOR * predictor.size if fast_decode and not keep else None
            decoding.append((_Slot(job, kept_bytes=cost), pool.submit(_decode, predictor, job, draft, keep)))

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([d.x for _, d in batch])
        logits = predictor.logits(x)
        flipped = predictor.logits(x.flip(-1)).flip(-1) if quality else [None] * len(batch)
        for (slot, d), lg, lgf in zip(batch, logits, flipped):
            lgf = None if lgf is None else lgf.clone()
            slot.result = pool.submit(_safe_write, predictor, slot.job, lg.clone(), d.image, spec, lgf)
        batch.clear()

    def ready(block: bool) -> Iterator[PredictionRecord]:
        nonlocal kept
        while slots:
            res = slots[0].result
            if res is None or (isinstance(res, Future) and not block and not res.done()):
                return
            record = res.result() if isinstance(res, Future) else res
            kept -= slots.popleft().kept_bytes
            yield record
            block = False

    try:
        top_up()
        while decoding:
            slot, fut = decoding.popleft()
            slots.append(slot)
            try:
                decoded = fut.result()
            except Exception as exc:  # a file that turned out corrupt: reported, the others go on
                slot.result = _failed(slot.job, "decode", exc)
            else:
                batch.append((slot, decoded))
            top_up()
            if len(batch) >= batch_size or not decoding:
                flush()
            yield from ready(block=False)
            # wait for the oldest write when the pipeline is full (by count, or by the overlay budget)
            while slots and slots[0].result is not None and (len(slots) >= max_slots - batch_size
                                                             or (not decoding and not exhausted)):  # fmt: skip
                yield from ready(block=True)
                top_up()
            top_up()
        if not exhausted or upcoming:  # pragma: no cover - a bug, never a silent loss of files
            raise RuntimeError("predict pipeline stopped with files left to do")
        flush()
        while slots:
            yield from ready(block=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
