"""Streaming prediction: image files -> mask files, with memory that does not depend on the number of files.

Two steps:

1. :func:`plan_predictions` (:mod:`scunext.deploy.predict_plan`) checks every input cheaply before anything is
   written: it exists, it is an image (a header read, :func:`image_info`, no pixel decode), it is within the pixel
   cap, and no output would replace an existing file (unless ``overwrite``). Earlier outputs of this tool in an
   input folder (``*_mask.png``, ``*_overlay.png``, ``*_seg.dcm``) are never taken as inputs, and the output folder
   may not be an input folder (or inside one).
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

The per-image table and what an earlier run finished are :mod:`scunext.deploy.predictions_table`.

Files are written under a hidden temporary name and then linked to their final name, which fails if the name
exists: an output is never half-written under its final name and, without ``overwrite``, never replaces a file that
appeared after the plan was made.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from scunext.data.errors import DataError
from scunext.data.io import area_mm2, read_image
from scunext.deploy.predict_plan import (
    FORMATS,
    OUTPUT_SUFFIXES,
    PredictJob,
    dicom_seg_writer,
    image_info,
    plan_predictions,
)
from scunext.deploy.predictions_table import (
    CSV_NAME,
    FinishedMask,
    OutputExistsError,
    PredictionRecord,
    PredictionsCSV,
    complete_length,
    finished_masks,
    printable,
)
from scunext.deploy.predictor import Predictor
from scunext.deploy.quality import quality_from_logits
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

#: zlib level of the PNG outputs: 1 encodes a binary mask about 2.5x faster than Pillow's default 6 for files about
#: 1.5x larger (2048x2048 mask, docs/deployment.md)
PNG_COMPRESS_LEVEL = 1
#: bytes of full-size pixels that the pipeline may hold for overlays (counted as the RGB overlay's size): about 4
#: images of 4000x3000, 13 of 2048x2048; the count bound (2 x batch + 2 x workers) applies on top
MAX_KEPT_BYTES = 160 * 2**20
#: the largest ``batch_size`` and ``workers`` accepted: the images in flight (2 x batch + 2 x workers) and the decodes
#: running at once grow with them, and beyond these nothing gets faster on any CPU we know of
MAX_BATCH_SIZE = 512
MAX_WORKERS = 64
#: with ``fast_decode`` and without overlays, JPEGs are decoded at the smallest DCT scale with both sides >=
#: DRAFT_FACTOR x the model's input size, then area-resized as usual. 2 rather than 1: half the mask differences
#: against a full decode, for 1.5x the decode time of the smallest scale (still about 5x faster than a full decode
#: of a 4000x3000 JPEG; docs/deployment.md)
DRAFT_FACTOR = 2


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
