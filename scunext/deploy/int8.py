"""int8: :func:`quantize_int8` makes a static int8 (QDQ, per-channel weights) ONNX model calibrated on real images,
and :func:`dice_change` measures what that costs in Dice on image/mask pairs. Needs ``pip install scunext[onnx]``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scunext.deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, make_session, require

__all__ = ["quantize_int8", "dice_change"]

log = logging.getLogger(__name__)


class _QuantizerNotes(logging.Filter):
    """Keeps onnxruntime's quantizer warnings on the root logger (1-D LayerNorm weights quantized per tensor,
    biases that are not initializers, the suggestion to pre-process) out of the user's console; kept at debug."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR and "onnxruntime" in record.pathname.replace("\\", "/"):
            self.dropped.append(record.getMessage())
            return False
        return True


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration_images: Sequence[np.ndarray | torch.Tensor],
    *,
    op_types: Sequence[str] | None = None,
) -> Path:
    """Static int8 quantization with onnxruntime: QDQ format, per-channel int8 weights, uint8 activations whose
    ranges are calibrated (min/max) on real images.

    Args:
        onnx_path: the fp32 model (from :func:`export_onnx`).
        out_path: where the int8 model is written.
        calibration_images: preprocessed images, each float32 ``(C, H, W)`` as the model sees them (e.g. from
            :meth:`~scunext.deploy.predictor.Predictor.prepare`); use training images, never the test set.
        op_types: ONNX op types to quantize (default: every type onnxruntime can quantize).

    Returns:
        ``out_path``.

    Raises:
        ValueError: no calibration images.
    """
    require("onnx")
    q = require("onnxruntime.quantization")
    if not calibration_images:
        raise ValueError("quantize_int8 needs at least one calibration image")
    batches = [np.ascontiguousarray(np.asarray(im, dtype=np.float32)[None]) for im in calibration_images]

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quiet = _QuantizerNotes()
    logging.getLogger().addFilter(quiet)
    try:
        q.quantize_static(
            str(onnx_path), str(out_path), _Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            op_types_to_quantize=list(op_types) if op_types else None, calibrate_method=q.CalibrationMethod.MinMax,
        )  # fmt: skip
    finally:
        logging.getLogger().removeFilter(quiet)
    if quiet.dropped:
        log.debug("onnxruntime quantizer notes: %s", "; ".join(quiet.dropped))
    log.info("int8 model (QDQ, per-channel, %d calibration images) written to %s", len(batches), out_path)
    return out_path


def dice_change(
    reference: str | Path,
    candidate: str | Path,
    images: Iterable[np.ndarray],
    masks: Iterable[np.ndarray],
    prepare: Callable[[np.ndarray], torch.Tensor],
    *,
    threshold: float = 0.5,
    threads: int | None = None,
) -> dict[str, float]:
    """Per-image mean Dice of two ONNX models (e.g. fp32 and int8) on image/mask pairs, scored at each mask's
    native resolution exactly as ``scunext evaluate`` does (logits resized bilinearly, sigmoid > ``threshold``).

    Args:
        reference: the fp32 ``.onnx``.
        candidate: the model to compare (e.g. from :func:`quantize_int8`).
        images: uint8 images as read by :func:`scunext.data.read_image`; any iterable, read one at a time (pass
            generators so that only one full-size image and mask are held, whatever the number of test images).
        masks: boolean ground-truth masks of the same sizes, in the same order.
        prepare: image -> float32 ``(C, S, S)`` tensor (:meth:`~scunext.deploy.predictor.Predictor.prepare`).
        threshold: foreground probability threshold.
        threads: onnxruntime intra-op threads.

    Returns:
        ``{"dice_reference", "dice_candidate", "change_points", "n_images", "pixels_changed_fraction"}``:
        change_points is ``100 * (candidate - reference)`` (negative = the candidate loses Dice).
    """
    from scunext.metrics import confusion_counts, dice_score

    sessions = [make_session(reference, threads), make_session(candidate, threads)]
    scores: list[list[float]] = [[], []]
    changed = total = 0
    missing = object()
    for im, mask in itertools.zip_longest(images, masks, fillvalue=missing):
        if im is missing or mask is missing:
            raise ValueError(f"need as many masks as images; they differ after {len(scores[0])} pairs")
        x = prepare(im)[None].float().numpy()
        preds = []
        for s, session in enumerate(sessions):
            logits = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][:, :1])
            up = F.interpolate(logits, size=mask.shape[:2], mode="bilinear", align_corners=False)
            pred = (torch.sigmoid(up) > threshold)[0]
            preds.append(pred)
            counts = confusion_counts(pred[None], torch.from_numpy(np.asarray(mask, bool))[None, None])
            scores[s].append(float(dice_score(counts, reduction="none")[0, 0]))
        changed += int((preds[0] != preds[1]).sum())
        total += preds[0].numel()
    if not scores[0]:
        raise ValueError("need at least one image and mask")
    ref, cand = float(np.mean(scores[0])), float(np.mean(scores[1]))
    return {
        "dice_reference": ref,
        "dice_candidate": cand,
        "change_points": 100.0 * (cand - ref),
        "n_images": float(len(scores[0])),
        "pixels_changed_fraction": changed / total,
    }

