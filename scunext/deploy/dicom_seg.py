"""A predicted mask as a DICOM Segmentation (SEG) object that references its source image, written with highdicom.

A PACS viewer that has the source image shows the SEG as an overlay on it: the SEG shares the source's study
(Study Instance UID, patient and study attributes copied by highdicom), lists the source in its Referenced Series
Sequence and references the source SOP Instance UID from its frame (Derivation Image / Source Image Sequence).
It is put in a new series of its own (a new Series Instance UID, Series Number 300, Instance Number 1).

What is written:

* Segmentation Type **BINARY** (one bit per pixel), one frame, at the source's ``Rows x Columns``; empty masks are
  kept (an empty frame), not omitted.
* One segment, number 1, with Segment Algorithm Type ``AUTOMATIC`` and an Algorithm Identification Sequence:
  name = ``model_name``, version = ``model_version``, family = DCM 123110 "Artificial Intelligence".
* The segment's coded meaning, from ``segment`` (see :data:`SEGMENTS`; all SNOMED CT codes from DICOM CID 7150
  "Segmentation Property Categories" and CID 7151 "Segmentation Property Types"):

  ============  ==========================  ======================================  ==========================
  ``segment``   label                       category                                type
  ============  ==========================  ======================================  ==========================
  ``lung``      lung field                  SCT 91723000 Anatomical Structure       SCT 39607008 Lung
  ``lesion``    skin lesion                 SCT 49755003 Morphologically            SCT 52988006 Lesion
                                            Abnormal Structure                      (region SCT 39937001 Skin)
  ``generic``   foreground                  SCT 85756007 Tissue                     SCT 85756007 Tissue
  ============  ==========================  ======================================  ==========================

  ``"auto"`` (default) picks from the model name: ``lung`` when it contains "lung", ``lesion`` when it contains
  "isic", "lesion" or "skin", else ``generic``. One segment holds both lungs; the model does not tell left from
  right.
* Patient and study attributes are copied from the source; type-2 ones it lacks (Patient Name/ID/Birth Date/Sex,
  Study Date/Time/ID, Accession Number, Referring Physician) are written empty, with a logged warning. A source
  without SOP Class/Instance, Study or Series Instance UID is refused.
* Without a Frame of Reference in the source (projection X-rays, photographs), no Pixel Measures are written:
  the spacing stays in the referenced source (see ``_drop_partial_pixel_measures`` for why).
* Manufacturer ``scunext``, Manufacturer's Model Name ``model_name``, Software Versions ``scunext <version>``.

highdicom is an optional extra (``pip install 'scunext[dicom-seg]'``); without it :func:`write_dicom_seg` raises
:class:`~scunext.errors.MissingDependencyError`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scunext.data.dicom import read_dicom_header
from scunext.data.errors import DataError
from scunext.errors import MissingDependencyError

__all__ = ["SEGMENTS", "SegmentMeaning", "segment_for_model", "segment_for_run", "write_dicom_seg"]

logger = logging.getLogger(__name__)

_INSTALL = "pip install 'scunext[dicom-seg]' (or: pip install highdicom)"
_SERIES_NUMBER = 300
#: identifiers a SEG must copy or reference: without them there is nothing to overlay on
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: patient and study attributes a SEG copies; type 2 (present, may be empty), so missing ones are copied empty
_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip


@dataclass(frozen=True)
class SegmentMeaning:
    """The coded meaning of a segment: ``(value, scheme, meaning)`` triples for the category, type and region."""

    label: str
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    region: tuple[str, str, str] | None = None


SEGMENTS: dict[str, SegmentMeaning] = {
    "lung": SegmentMeaning("lung field", ("91723000", "SCT", "Anatomical Structure"), ("39607008", "SCT", "Lung")),
    "lesion": SegmentMeaning(
        "skin lesion",
        ("49755003", "SCT", "Morphologically Abnormal Structure"),
        ("52988006", "SCT", "Lesion"),
        ("39937001", "SCT", "Skin"),
    ),
    "generic": SegmentMeaning("foreground", ("85756007", "SCT", "Tissue"), ("85756007", "SCT", "Tissue")),
}
"""The segment meanings :func:`write_dicom_seg` can write, by name."""


def segment_for_model(model_name: str) -> str:
    """The :data:`SEGMENTS` key for a model name: ``lung``, ``lesion`` or ``generic`` (module docstring)."""
    name = model_name.lower()
    if "lung" in name:
        return "lung"
    if any(word in name for word in ("isic", "lesion", "skin")):
        return "lesion"
    return "generic"


def segment_for_run(run_dir: str | Path, weights: str | None = None) -> str:
    """The :data:`SEGMENTS` key for the model of ``run_dir``: from the released weights' name and the name of the
    dataset folder it was trained on (``chest-xray-lungs``: lung field; ``isic2017``: lesion; the shipped default
    sample is ISIC), not from the architecture's name, which says nothing about the anatomy."""
    from scunext.runs import RunDir

    data = RunDir(run_dir).load_config().data
    return segment_for_model(f"{weights or ''} {Path(data).name if data else 'isic2017'}")


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise MissingDependencyError(f"writing DICOM SEG needs highdicom; {_INSTALL}") from exc
    return highdicom


def _drop_partial_pixel_measures(seg: Any) -> None:
    """Remove a Pixel Measures Sequence without Slice Thickness from a SEG without a Frame of Reference.

    For a projection image with Pixel Spacing (a chest X-ray), highdicom writes Pixel Measures with the spacing but
    no Slice Thickness; its own reader (``highdicom.seg.segread``) then refuses the file. In a SEG, Pixel Measures
    is only required with a Frame of Reference (PS3.3 C.7.6.16.2.1, after CP 1426), and the SEG's grid is the
    referenced source's, which carries the spacing; dropping the partial sequence keeps the file valid and readable.
    """
    if "FrameOfReferenceUID" in seg or "SharedFunctionalGroupsSequence" not in seg:
        return
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures and "SliceThickness" not in measures[0]:
        del shared.PixelMeasuresSequence


def write_dicom_seg(
    source_dicom: Path,
    mask: np.ndarray,
    out: Path,
    *,
    model_name: str,
    model_version: str,
    segment: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write ``mask`` as a binary DICOM SEG that references ``source_dicom``; returns ``out``.

    Args:
        source_dicom: the DICOM image the mask was predicted from (single frame, Rows x Columns = mask shape).
        mask: ``bool`` (or 0/1) array ``(H, W)`` at the source's size; True is the segment.
        out: the file to write (conventionally ``NAME_seg.dcm``). Written to a temporary file in the same folder
            and renamed, so a crash never leaves a partial file under this name.
        model_name: written as the algorithm name and Manufacturer's Model Name, e.g. the released weights' name.
        model_version: written as the algorithm version, e.g. the checkpoint's epoch or the package version.
        segment: ``"lung"``, ``"lesion"``, ``"generic"`` or ``"auto"`` (from ``model_name``), see :data:`SEGMENTS`.
        overwrite: replace an existing ``out``; by default an existing file is refused.

    Raises:
        MissingDependencyError: highdicom is not installed.
        DataError: the source is not a readable single-frame DICOM image, or lacks what a SEG must copy from it.
        ValueError: a mask that is not 2-D, not binary or not the source's size; an unknown ``segment``; empty
            ``model_name`` or ``model_version``.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    hd = _highdicom()
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    import scunext

    source_dicom, out = Path(source_dicom), Path(out)
    key = segment_for_model(model_name) if segment == "auto" else segment
    if key not in SEGMENTS:
        raise ValueError(f"unknown segment {segment!r}; choose from auto, {', '.join(SEGMENTS)}")
    if not model_name or not model_version:
        raise ValueError("model_name and model_version must be non-empty")
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("mask must be boolean or hold only 0 and 1")
        arr = arr.astype(bool)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists; not overwritten")

    head = read_dicom_header(source_dicom, spacing=False)  # the caller has the spacing (and its warnings)
    if not head.has_pixels or head.rows < 1:
        raise DataError(f"{source_dicom}: not a DICOM image (no Pixel Data); a SEG needs an image to reference")
    if head.frames > 1:
        raise DataError(f"{source_dicom}: multi-frame source ({head.frames} frames); only single frames are supported")
    if arr.shape != (head.rows, head.columns):
        raise ValueError(
            f"mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but the source {source_dicom.name} is "
            f"{head.columns}x{head.rows}"
        )
    source = pydicom.dcmread(source_dicom)
    missing = [k for k in _REQUIRED if not source.get(k)]
    if missing:
        raise DataError(f"{source_dicom}: DICOM source lacks {', '.join(missing)}; a SEG cannot reference it")
    empty = [k for k in _TYPE2 if k not in source]
    for keyword in empty:  # only in memory: the source file is never changed
        setattr(source, keyword, "")
    if empty:
        logger.warning("%s: %s missing; written empty in the SEG", source_dicom, ", ".join(empty))

    meaning = SEGMENTS[key]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, version=model_version, family=codes.cid7162.ArtificialIntelligence
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=meaning.label,
        segmented_property_category=hd.sr.CodedConcept(*meaning.category),
        segmented_property_type=hd.sr.CodedConcept(*meaning.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=generate_uid(),
        tracking_id=f"{model_name} {meaning.label}",
        anatomic_regions=[hd.sr.CodedConcept(*meaning.region)] if meaning.region else None,
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=[source],
            pixel_array=arr[None].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=generate_uid(),
            series_number=_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="scunext",
            manufacturer_model_name=model_name,
            software_versions=f"scunext {scunext.__version__}",
            device_serial_number="none",
            content_description=f"{model_name} {model_version}: {meaning.label}"[:64],
            content_label="SCUNEXT",
            omit_empty_frames=False,
        )
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source_dicom}: cannot build a DICOM SEG for this source ({reason})") from exc

    _drop_partial_pixel_measures(seg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        seg.save_as(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("%s: DICOM SEG (%d foreground pixels) for %s", out, int(arr.sum()), source_dicom)
    return out
