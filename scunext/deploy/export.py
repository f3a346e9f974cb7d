"""A training run folder -> ONNX file, checked against eager PyTorch on real images (``scunext export``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scunext.deploy.int8 import dice_change, quantize_int8
from scunext.deploy.onnx_export import (
    SAMPLE_FOR_CHANNELS,
    check_onnx,
    export_onnx,
    sample_inputs,
    set_preprocessing_metadata,
)
from scunext.runs.durable import fsync_dir, made_folder, orphan_temps, remove_tree, rename

__all__ = ["export_run", "int8_path"]

log = logging.getLogger(__name__)

#: the private folder an export is written and checked in, beside its output (``.scunext-export.tmpPID``)
_STAGE = ".scunext-export"


def int8_path(out: str | Path) -> Path:
    """Where ``export --int8`` writes the int8 graph of ``out``: ``STEM-int8.onnx`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + "-int8.onnx")


def _run_pairs(run_dir: Path, data: Path, part: str) -> list[Any]:
    """The run's ``part`` image/mask pairs if its split and data folder ``data`` (:meth:`RunDir.data_root`: the
    shipped ISIC 2017 sample for a config without one, as for evaluate) are reachable, else an empty list."""
    from scunext.data import DataError, discover_pairs, select_pairs
    from scunext.runs import RunDir

    run = RunDir(run_dir)
    if not run.split_file.is_file() or not Path(data).is_dir():
        return []
    try:
        ids = getattr(run.load_split(), part)
        return select_pairs(discover_pairs(data), ids) if ids else []
    except (DataError, ValueError, KeyError) as exc:
        log.warning("cannot use the %s images of %s (%s)", part, run_dir, exc)
        return []


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    checkpoint: str = "best",
    size: int | None = None,
    dynamic: bool = True,
    int8: bool = False,
    parity_images: int = 8,
    calibration_images: int = 32,
) -> dict[str, Any]:
    """Export a training run's checkpoint to ONNX and check it against eager PyTorch on real images.

    The parity check runs the first ``parity_images`` shipped sample images of the model's modality
    (:data:`SAMPLE_FOR_CHANNELS`), preprocessed as for inference, through both runtimes (:func:`check_onnx`).
    With ``int8`` it also writes ``<out stem>-int8.onnx`` (:func:`quantize_int8`) calibrated on
    ``calibration_images`` of the run's *training* images (a seeded random choice; the shipped samples if the
    run's data folder is not reachable), and measures its Dice change against the fp32 graph on the run's *test*
    images (the shipped sample pairs if those are not reachable) with :func:`dice_change`.

    Args:
        run_dir: a training run folder.
        out: the ``.onnx`` file (default ``RUN_DIR/model.onnx``).
        checkpoint: ``"best"`` or ``"last"``.
        size: trace size (default: the run's training size); with ``dynamic=False`` the graph's fixed size.
        dynamic: dynamic batch and H/W axes.
        int8: also write and assess a static int8 model.
        parity_images: how many sample images the parity check uses.
        calibration_images: how many training images calibrate the int8 model.

    Returns:
        A JSON-able report: ``onnx`` (path), ``max_abs_logit_diff``, ``parity_inputs`` (description), and with
        ``int8``: ``int8_onnx``, ``int8_max_abs_logit_diff``, ``calibration`` and ``dice`` (:func:`dice_change`
        plus ``on``).

    Raises:
        CheckpointError: missing run or checkpoint.
        ValueError: bad ``size`` for the model, or no sample images for its number of channels.
    """
    from scunext.deploy.predictor import Predictor
    from scunext.runs import RunDir

    run_dir = Path(run_dir)
    pred = Predictor.from_run(run_dir, checkpoint, calibrated=False)
    size = pred.size if size is None else size
    out = Path(out) if out is not None else RunDir(run_dir).onnx_file
    # Everything is written and checked in a private staging folder beside ``out`` (``.scunext-export.tmpPID``)
    # and renamed into place only at the end: an export that fails or is interrupted leaves no half-written or
    # unchecked file, keeps a file it was to replace, and onnxruntime's quantizer writes its ``-inferred`` scratch
    # file there, not beside ``out`` (where it would replace and delete a user's file). Folders created for ``out``
    # are removed again on failure. The staging name is short (a long --out stays usable) and fixed, so that the
    # folder of an export that was killed (SIGKILL, power loss) is removed by the next export into the same folder.
    # (The two renames of --int8 are not one atomic step: killed between them, the new int8 file stands beside the
    # old fp32 one; docs/deployment.md.)
    stage = out.with_name(f"{_STAGE}.tmp{os.getpid()}")
    with made_folder(out.parent):
        for orphan in orphan_temps(out.parent, [_STAGE]):
            log.info("removing %s, left by an export that was killed", orphan)
            remove_tree(orphan)
        stage.mkdir()
        try:
            report = _export_staged(run_dir, stage, pred, checkpoint, size, dynamic, int8, parity_images,
                                    calibration_images)  # fmt: skip
            if int8:
                int8_out = int8_path(out)
                rename(Path(report["int8_onnx"]), int8_out)
                report["int8_onnx"] = str(int8_out)
            rename(Path(report["onnx"]), out)
            report["onnx"] = str(out)
            fsync_dir(out.parent)
        except BaseException:
            try:
                remove_tree(stage)
            except OSError as exc:  # the error that stopped the export is the one to report, not this one
                log.warning("could not remove the staging folder %s (%s); remove it by hand", stage, exc)
            raise
        remove_tree(stage)
    log.debug("wrote %s%s", out, f" and {report['int8_onnx']}" if int8 else "")
    return report


def _export_staged(
    run_dir: Path, stage: Path, pred: Any, checkpoint: str, size: int, dynamic: bool, int8: bool,
    parity_images: int, calibration_images: int,
) -> dict[str, Any]:  # fmt: skip
    """:func:`export_run`'s work, with every file written in the folder ``stage``."""
    from scunext.data import discover_pairs, read_image, read_mask, sample_dir
    from scunext.data.preprocess import preprocess
    from scunext.runs import RunDir

    path = export_onnx(pred.model, stage / "model.onnx", in_channels=pred.in_channels, size=size, dynamic=dynamic)
    preprocessing = pred.preprocessing()
    if not dynamic and size != pred.size:  # a fixed graph takes only its own size: say so, and what it was trained at
        preprocessing.update(size=size, trained_size=pred.size)
    set_preprocessing_metadata(path, preprocessing)
    sample = SAMPLE_FOR_CHANNELS.get(pred.in_channels)
    x = torch.stack(sample_inputs(pred.in_channels, size, parity_images, pred.intensity))
    report: dict[str, Any] = {
        "run": str(run_dir), "model": pred.name, "checkpoint": checkpoint, "onnx": str(path), "size": size,
        "dynamic": dynamic, "max_abs_logit_diff": check_onnx(path, pred.model, x),
        "parity_inputs": f"{len(x)} shipped {sample} images at {size}x{size}"
        + (" and at a second size, batch 2" if dynamic else ""),
        "preprocessing": preprocessing,
    }  # fmt: skip
    if not int8:
        return report

    run = RunDir(run_dir)
    cfg = run.load_config()
    side = pred.size if dynamic else size  # what the graph will be fed: images at the training size if it can be

    def prepare(image: np.ndarray) -> torch.Tensor:
        return preprocess(image, pred.in_channels, side, pred.intensity)

    # the shipped sample when the config names none (read as "unreachable", the int8 check calibrated and scored
    # on the whole sample, the run's test images among the calibration ones)
    data = run.data_root(None, cfg)
    train = _run_pairs(run_dir, data, "train")
    # without the run's data, the shipped sample serves both, in two disjoint halves (every other pair by name): an
    # int8 graph scored on the images that calibrated it would report an optimistic change
    shipped = [] if train else discover_pairs(sample_dir(sample))
    if train:
        rng = np.random.default_rng(0)
        chosen = [train[i] for i in sorted(rng.choice(len(train), min(calibration_images, len(train)), replace=False))]
        report["calibration"] = f"{len(chosen)} training images of {data}"
    else:
        chosen = shipped[0::2][:calibration_images]
        report["calibration"] = (f"{len(chosen)} shipped {sample} images, every other one by name (the run's "
                                 "training data is not reachable)")  # fmt: skip
    calib = [prepare(read_image(p.image)) for p in chosen]
    q = quantize_int8(path, stage / "model-int8.onnx", calib)
    set_preprocessing_metadata(q, preprocessing)
    report["int8_onnx"] = str(q)
    report["int8_max_abs_logit_diff"] = check_onnx(q, pred.model, x)
    test = _run_pairs(run_dir, data, "test")
    on = f"{len(test)} test images of {data}"
    if not test:
        shipped = shipped or discover_pairs(sample_dir(sample))
        test = shipped[1::2] if not train else shipped
        on = (f"{len(test)} shipped {sample} pairs" + (", the other half" if not train else "")
              + " (the run's test data is not reachable)")
    images = (read_image(p.image) for p in test)  # read one pair at a time: memory stays flat with the test part
    masks = (read_mask(p.mask, threshold=cfg.threshold_masks) for p in test)
    report["dice"] = {**dice_change(path, q, images, masks, prepare, threshold=pred.threshold), "on": on}
    return report
