"""Evaluation of a trained run on held-out images, at each image's native resolution."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # (not tqdm.auto: its asyncio class calls iter() on a DataLoader at once)

from scunext.data import DataError, SegmentationDataset, discover_pairs, select_pairs
from scunext.data.dataset import missing_ids
from scunext.deploy.predictor import Predictor
from scunext.engine.jsonable import jsonable
from scunext.metrics import SegmentationMeter, dice_score
from scunext.runs import RunDir, RunInUseError
from scunext.runs.durable import atomic_write, atomic_write_text, orphan_temps, remove_tree
from scunext.runs.lock import FolderLock
from scunext.visualize import overlay, panel

__all__ = ["evaluate_run", "SUBSETS", "REPORT_FILES", "ReportExistsError"]

log = logging.getLogger(__name__)

SUBSETS = ("test", "val", "train", "external", "all")
#: the files of an evaluation report; ``metrics.json`` is written last and marks a complete report
REPORT_FILES = ("per_image.csv", "worst.png", "metrics.json")


class ReportExistsError(FileExistsError, ValueError):
    """The output would overwrite an earlier report (a user's file); pass ``overwrite=True`` to allow it."""


def check_no_report(out: Path, files: tuple[str, ...]) -> None:
    """Refuse to write a report into ``out`` over one already there (a user's file) when not told to overwrite."""
    existing = [f for f in files if (Path(out) / f).exists()]
    if existing:
        raise ReportExistsError(f"{out} already holds a report ({', '.join(existing)}); choose another --out or "
                                "pass --overwrite")  # fmt: skip


#: how long a report writer waits for another one to finish writing into the same folder (it takes milliseconds)
REPORT_LOCK_WAIT_S = 60.0


@contextmanager
def report_lock(out: Path, wait_s: float | None = None):
    """Hold the writer lock of the existing folder ``out`` while a report is written there, so that two processes
    writing one folder take turns (each file of a report comes from one of them, never half from each). Waits up
    to ``wait_s`` seconds (default :data:`REPORT_LOCK_WAIT_S`) for another writer, then raises
    :class:`~scunext.runs.RunInUseError` naming it."""
    wait_s = REPORT_LOCK_WAIT_S if wait_s is None else wait_s
    lock = FolderLock(out)
    deadline = time.monotonic() + wait_s
    while not lock.acquire():
        if time.monotonic() >= deadline:
            raise RunInUseError(f"{out}: another process ({lock.holder()}) is writing there (a report, or the "
                                "training of this run folder); try again when it has finished, or choose another "
                                "--out")  # fmt: skip
        time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()


def _write_report(out: Path, report: dict[str, Any], rows: list[dict[str, Any]], worst_png: bytes | None,
                  replace: bool = True) -> None:  # fmt: skip
    """Replace the report in ``out`` so that a crash at any point leaves the old report, the new one, or none,
    never a mix: the old ``metrics.json`` (the completeness mark every reader checks) goes first, each file is
    written atomically, the new ``metrics.json`` last. ``*.tmp*`` leftovers of an interrupted write are removed
    (not those of a writer that is still running). Writers of one folder take turns (:func:`report_lock`);
    without ``replace``, a report that another process wrote meanwhile is refused, not overwritten."""
    out.mkdir(parents=True, exist_ok=True)
    with report_lock(out):
        if not replace:
            check_no_report(out, REPORT_FILES)
        _replace_report(out, report, rows, worst_png)


def _replace_report(out: Path, report: dict[str, Any], rows: list[dict[str, Any]], worst_png: bytes | None) -> None:
    for p in orphan_temps(out, REPORT_FILES):
        remove_tree(p)
    remove_tree(out / "metrics.json")
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "per_image.csv", buf.getvalue().encode("utf-8"))
    if worst_png is None:
        remove_tree(out / "worst.png")
    else:
        atomic_write(out / "worst.png", worst_png)
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(report), indent=2))


def _seen_in_training(run: RunDir, pairs: list, subset: str) -> dict[str, int]:
    """How many of ``pairs`` are in the run's own train and val parts (``--subset all`` on the data it trained on
    scores images it learnt from or chose its checkpoint on: not a held-out number); 0 for a part of the split."""
    if subset != "all":
        return {"train": 0, "val": 0}
    try:
        split = run.load_split()
    except (OSError, ValueError):  # a released weights folder or an old run without split.json: nothing to compare
        return {"train": 0, "val": 0}
    return {part: len(split_ids) - len(missing_ids(pairs, split_ids))
            for part, split_ids in (("train", split.train), ("val", split.val))}  # fmt: skip


def _subset_pairs(run: RunDir, data_root: Path, subset: str):
    if subset == "all":
        return discover_pairs(data_root)
    pairs = discover_pairs(data_root, unpaired="skip")  # the run's split.json names the images: strays do not count
    split = run.load_split()
    ids = getattr(split, subset)
    if not ids:
        raise DataError(f"the run's split has no {subset!r} part; choose another --subset (or 'all')")
    missing = missing_ids(pairs, ids)
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(ids)} {subset!r} images of this run are not in {data_root} (e.g. "
            f"{missing[0]}); is it the data the run was trained on? To score every image of another dataset, use "
            "--subset all"
        )
    return select_pairs(pairs, ids)


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    subset: str = "test",
    checkpoint: str = "best",
    out_dir: str | Path | None = None,
    hd95: bool = True,
    threshold_masks: bool = False,
    worst_k: int = 8,
    batch_size: int = 8,
    device: str = "cpu",
    show_progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score a run's checkpoint on ``subset`` of ``data`` (default: the run's own data) and write the report.

    Predictions are made at the training size and their logits resized (bilinear) to each image's native size;
    the ground-truth masks are read at native size, so nothing is scored on resized masks.

    Writes ``<out_dir>/metrics.json`` (per-image mean, its sd and pooled value of Dice, IoU, precision, recall,
    specificity, HD95 in pixels), ``per_image.csv`` and ``worst.png`` (the ``worst_k`` lowest-Dice images with
    overlays: prediction red, ground truth outlined green). ``out_dir`` defaults to ``<run_dir>/eval/<subset>``,
    the run's own report, which is replaced; a report in another ``out_dir`` is replaced only with ``overwrite``
    (else :class:`ReportExistsError` before anything is computed). A crash while writing leaves the old report,
    the new one or none (no ``metrics.json``), never a mix of the two.

    Returns:
        The metrics dict also written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if out_dir is not None and not overwrite:
        check_no_report(Path(out_dir), REPORT_FILES)
    predictor = Predictor.from_run(run_dir, checkpoint, device=device, calibrated=False)  # scores need no flags
    cfg = run.load_config()
    data_root = run.data_root(data, cfg)
    pairs = _subset_pairs(run, data_root, subset)
    seen = _seen_in_training(run, pairs, subset)
    if seen["train"] or seen["val"]:
        log.warning("%d of the %d images scored are in this run's training part and %d in its validation part: "
                    "--subset all on the data it trained on is not a held-out score (metrics.json: "
                    "seen_in_training)", seen["train"], len(pairs), seen["val"])  # fmt: skip
    # native-size reader with the training-time checks (mask size, binary values); no resizing
    reader = SegmentationDataset(pairs, in_channels=predictor.in_channels, size=None,
                                 threshold_masks=threshold_masks or cfg.threshold_masks)  # fmt: skip
    out = Path(out_dir) if out_dir else run.eval_dir(subset)

    meter = SegmentationMeter(num_classes=1, output_type="mask", compute_hd95=hd95)
    worst: list[tuple[float, str, np.ndarray, np.ndarray, np.ndarray]] = []
    bar = tqdm(total=len(pairs), desc=f"evaluate {subset}", unit="img", disable=not show_progress)
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        images, masks = zip(*(reader.load(j) for j in range(i, i + len(chunk))))
        preds = predictor.predict(list(images), batch_size)
        for p, im, m, pr in zip(chunk, images, masks, preds):
            counts = meter.update(torch.from_numpy(pr)[None], torch.from_numpy(m)[None], ids=[p.id])
            d = float(dice_score(counts, reduction="none")[0, 0])
            worst.append((d, p.id, im, m, pr))
            worst.sort(key=lambda t: (t[0], t[1]))
            del worst[worst_k:]
        bar.update(len(chunk))
    bar.close()

    scores = meter.compute()
    report = {
        "run": str(run_dir),
        "model": predictor.name,
        "checkpoint": checkpoint,
        "data": str(data_root),
        "subset": subset,
        "seen_in_training": seen,
        "threshold": predictor.threshold,
        "resolution": "native (logits resized to each mask's size)",
        "reductions": {
            "per_image_mean": "mean over images of each image's score (the paper's tables use this)",
            "pooled": "one confusion matrix summed over all pixels of the set",
        },
        "empty_mask_policy": "both empty: Dice = IoU = 1; one empty: 0; HD95 undefined (NaN) if one is empty",
        **scores,
    }
    rows = meter.per_image()
    worst_png = None
    if worst:
        tiles = [overlay(im, pr, m) for _, _, im, m, pr in worst]
        caps = [f"{pid} Dice {d:.3f}" for d, pid, *_ in worst]
        png = io.BytesIO()
        panel(tiles, caps).save(png, format="PNG")
        worst_png = png.getvalue()
    _write_report(out, report, rows, worst_png, replace=out_dir is None or overwrite)
    log.info("%s %s: Dice %.4f (per-image mean), IoU %.4f, n=%d", run_dir, subset,
             scores["dice"]["per_image_mean"], scores["iou"]["per_image_mean"], scores["n_images"])  # fmt: skip
    return jsonable(report)
