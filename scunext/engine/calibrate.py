"""The calibration of a run's quality score (``scunext calibrate``).

:func:`calibrate_quality` chooses the review threshold on the run's validation part, clean and under the shifts of
:mod:`scunext.data.shifts` (scored as by :func:`scunext.engine.robustness.stress_test`), and writes ``quality.json``
beside the checkpoint; with ``site`` it chooses it on a local labelled folder and keeps the run's area prior.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # (not tqdm.auto: its asyncio class calls iter() on a DataLoader at once)

from scunext.data import DataError, discover_pairs, read_mask, select_pairs
from scunext.data.shifts import modality_of, parse_shifts, shift_conditions
from scunext.deploy.predictor import Predictor
from scunext.deploy.quality import (
    QUALITY_FILE,
    QualityCalibration,
    area_prior,
    check_rule,
    choose_threshold,
    count_components,
)
from scunext.engine.evaluate import ReportExistsError, report_lock
from scunext.engine.jsonable import jsonable
from scunext.engine.robustness import even_pick, pair_reader, prepare_part, score_conditions
from scunext.runs import RunDir, data_root_of
from scunext.runs.durable import made_folder

__all__ = ["calibrate_quality"]

log = logging.getLogger(__name__)


def calibrate_quality(
    run_dir: str | Path,
    data: str | Path | None = None,
    shifts: str | list[str] = "all",
    out: str | Path | None = None,
    max_images: int = 0,
    checkpoint: str = "best",
    batch_size: int = 16,
    overwrite: bool = False,
    show_progress: bool = True,
    rule: str = "youden",
    site: str | Path | None = None,
) -> QualityCalibration:
    """Calibrate the quality score of a run and write ``quality.json`` (default ``RUN_DIR/quality.json``).

    The area and component prior comes from the run's *training* masks; the threshold from its *validation* part,
    scored clean and under every shift and severity (so that failures exist), with
    :func:`~scunext.deploy.quality.choose_threshold` and its ``rule`` (``youden`` or ``failures``). The test part
    is not touched.

    With ``site`` (a labelled folder of local images, ``images/`` + ``masks/``), the threshold is chosen on *all*
    its images instead (same shifts and rule), and the area prior is kept from the run's own calibrated
    ``quality.json`` (the training masks are not needed, so this works for released weights at a new hospital).
    ``out`` is then required: the run's own calibration is never replaced by a site's.

    The writer lock of the target's folder is held from the first prediction to the written file (a training that
    holds the run folder, or another calibration writing there, is refused at once), and without ``overwrite`` a
    file that appeared meanwhile is refused, never replaced.
    """
    check_rule(rule)  # before any scoring
    run_dir = Path(run_dir)
    if site is not None and out is None:
        raise ValueError("a site calibration needs --out FILE (the run's own quality.json is kept); use it with "
                         "predict/robustness/serve --quality FILE")  # fmt: skip
    target = Path(out) if out else run_dir / QUALITY_FILE
    if target.exists() and not overwrite:
        raise ReportExistsError(f"{target} exists; pass --overwrite to recalibrate")
    # a site calibration keeps the run's own area prior (so it must be this checkpoint's); a calibration on the
    # run's data replaces the run's file, which may be another checkpoint's
    predictor = Predictor.from_run(run_dir, checkpoint, calibrated=site is not None)
    names = parse_shifts(shifts, modality_of(predictor.in_channels))
    cfg = RunDir(run_dir).load_config()
    with made_folder(target.parent), report_lock(target.parent, wait_s=0):
        if target.exists() and not overwrite:  # written by a process that held the lock before us
            raise ReportExistsError(f"{target} exists; pass --overwrite to recalibrate")
        return _calibrate(predictor, run_dir, cfg, data, site, names, target, max_images, batch_size, show_progress,
                          rule, RunDir(run_dir).weights_sha256(checkpoint))  # fmt: skip


def _calibrate(predictor, run_dir, cfg, data, site, names, target, max_images, batch_size, show_progress, rule,
               sha256):  # fmt: skip
    """The body of :func:`calibrate_quality`, run under the target folder's writer lock; ``sha256``: the weights
    calibrated (:attr:`QualityCalibration.weights_sha256`)."""
    if site is not None:
        return _calibrate_site(predictor, cfg, Path(site), names, target, max_images, batch_size, show_progress, rule,
                               sha256)  # fmt: skip
    data_root = Path(data) if data else data_root_of(cfg)
    split = RunDir(run_dir).load_split()
    if not split.train or not split.val:
        raise DataError("calibration needs the run's train part (area prior) and val part (threshold)")
    all_pairs = discover_pairs(data_root, unpaired="skip")  # the split names the images
    train_pairs = select_pairs(all_pairs, split.train)
    fracs, comps = [], []
    for p in tqdm(train_pairs, desc="area prior", unit="mask", disable=not show_progress):
        m = read_mask(p.mask, threshold=cfg.threshold_masks)
        fracs.append(float(m.mean()))
        comps.append(count_components(m))
    prior = area_prior(np.array(fracs), comps)
    provisional = QualityCalibration(threshold=0.0, source="calibrated", **prior)

    _, _, pairs, reader = prepare_part(run_dir, data_root, "val", max_images, predictor)
    conditions = shift_conditions(names)
    threshold, stats = _choose_on(predictor, pairs, reader, conditions, provisional, batch_size, rule,
                                  "calibrate val", show_progress)  # fmt: skip
    stats.update({"data": str(data_root), "part": "val", "n_images": len(pairs), "shifts": names,
                  "conditions": len(conditions), "n_train_masks": len(train_pairs),
                  "train_area_fraction_median": float(np.median(fracs))})  # fmt: skip
    cal = QualityCalibration(threshold=threshold, source="calibrated", stats=jsonable(stats), **prior,
                             weights_sha256=sha256)  # fmt: skip
    cal.to_json(target)
    log.info("%s: review threshold %.4f (%s)", target, threshold, stats["rule"])
    return cal


def _choose_on(predictor, pairs, reader, conditions, calibration, batch_size, rule, desc, show_progress):
    """Score every pair under every condition and choose the review threshold on those predictions."""
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(pairs) * len(conditions), desc=desc, unit="pred", disable=not show_progress)
    for i, pair in enumerate(pairs):
        image, mask = reader.load(i)
        image = image[..., 0] if image.shape[2] == 1 else image
        rows += score_conditions(predictor, image, mask, pair.id, conditions, calibration, batch_size)
        bar.update(len(conditions))
    bar.close()
    return choose_threshold([r["score"] for r in rows], [r["dice"] for r in rows], [r["forced"] for r in rows],
                            rule=rule)  # fmt: skip


def _calibrate_site(predictor, cfg, site, names, target, max_images, batch_size, show_progress, rule, sha256):
    """The threshold from every image of a local labelled folder; the area prior from the run's calibration."""
    own = predictor.quality
    if own is None or own.source != "calibrated":
        raise DataError("a site calibration keeps the run's area prior, but this run has no calibrated "
                        "quality.json: run `scunext calibrate RUN_DIR` on its own data first")  # fmt: skip
    pairs = even_pick(discover_pairs(site), max_images)
    conditions = shift_conditions(names)
    threshold, stats = _choose_on(predictor, pairs, pair_reader(pairs, predictor, cfg.threshold_masks), conditions, own,
                                  batch_size, rule, "calibrate site", show_progress)  # fmt: skip
    stats.update({"data": str(site), "part": "site (all images)", "n_images": len(pairs), "shifts": names,
                  "conditions": len(conditions), "area_prior_from": "the run's quality.json",
                  "run_threshold": own.threshold})  # fmt: skip
    cal = replace(own, threshold=threshold, source="calibrated", stats=jsonable(stats), weights_sha256=sha256)
    cal.to_json(target)
    log.info("%s: site review threshold %.4f (%s; the run's own: %.4f)", target, threshold, stats["rule"],
             own.threshold)  # fmt: skip
    return cal
