"""The plan of a ``scunext predict`` run: every input checked cheaply (a header read, no pixel decode) and every
output named before anything is written (:func:`plan_predictions`); what :func:`scunext.deploy.stream.stream_predict`
then carries out."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scunext.data.dataset import IMAGE_EXTENSIONS, image_id, is_image_file
from scunext.data.errors import DataError
from scunext.data.io import MAX_IMAGE_PIXELS, read_image_info
from scunext.deploy.predictions_table import (
    CSV_NAME,
    OutputExistsError,
    PredictionsCSV,
    finished_masks,
    printable,
)
from scunext.errors import shown

__all__ = ["FORMATS", "OUTPUT_SUFFIXES", "MAX_NAME_BYTES", "PredictJob", "image_info", "plan_predictions",
           "dicom_seg_writer"]

log = logging.getLogger(__name__)

#: ``--format`` values: PNG masks (0/255, 8-bit gray) or DICOM Segmentation objects (DICOM inputs only)
FORMATS = ("png", "dicom-seg")
#: file-name endings of this tool's outputs, by kind; files ending so in an input folder are not taken as inputs
OUTPUT_SUFFIXES = {"png": "_mask.png", "dicom-seg": "_seg.dcm", "overlay": "_overlay.png"}
#: the longest file name (bytes) that Linux, macOS and Windows file systems accept
MAX_NAME_BYTES = 255
_SHOW = 5


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


def _same_input(recorded: str, source: Path) -> bool:
    """Whether a row's ``file`` names the input ``source`` (as given then and now, or the same file on disk)."""
    if recorded in (str(source), printable(str(source))):
        return True
    try:
        return Path(recorded).resolve() == source.resolve()
    except (OSError, ValueError):
        return False


def dicom_seg_writer() -> Any:
    """``scunext.deploy.dicom_seg.write_dicom_seg``, imported on first use (it raises ``MissingDependencyError``
    naming the ``dicom-seg`` extra when highdicom is not installed)."""
    from scunext.deploy.dicom_seg import _highdicom, write_dicom_seg

    _highdicom()  # imported lazily by the writer itself, per file: without it every image was segmented, then skipped
    return write_dicom_seg
