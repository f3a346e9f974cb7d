"""Acquisition-shift stress test of a trained run.

:func:`stress_test` re-scores a part of the run's split under every shift and severity of
:mod:`scunext.data.shifts`, with the same per-image confusion counts as ``scunext evaluate`` (prediction at the
training size, logits resized to each image's native size, scored against the native mask), and records each
prediction's quality score (:mod:`scunext.deploy.quality`). The calibration of that score, which scores the same
way, is :mod:`scunext.engine.calibrate`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # (not tqdm.auto: its asyncio class calls iter() on a DataLoader at once)

from scunext.data import SegmentationDataset
from scunext.data.shifts import SHIFTS, apply_shift, image_seed, modality_of, parse_shifts, shift_conditions
from scunext.deploy.predictor import Predictor
from scunext.deploy.quality import (
    QualityCalibration,
    auroc,
    flipped_probabilities,
    quality_from_probabilities,
)
from scunext.engine.evaluate import ReportExistsError, _subset_pairs, check_no_report, report_lock
from scunext.engine.jsonable import jsonable
from scunext.metrics import confusion_counts, dice_score, iou_score
from scunext.runs import RunDir, data_root_of
from scunext.runs.durable import (
    atomic_write,
    atomic_write_text,
    fsync_dir,
    made_folder,
    orphan_temps,
    remove_tree,
    rename,
)

__all__ = ["stress_test", "RESULT_FILES", "ReportExistsError", "score_conditions", "prepare_part", "pair_reader",
           "even_pick"]

log = logging.getLogger(__name__)

RESULT_FILES = ("per_image.csv", "summary.csv", "summary.md", "robustness.json", "robustness.png")
PER_IMAGE_FIELDS = ("id", "group", "shift", "severity", "parameter", "dice", "iou", "area_px", "score", "review",
                    "agreement", "margin", "components")  # fmt: skip


#: full-size bytes of shifted images and maps held at once per image (the conditions are scored in chunks)
CONDITION_BYTES = 1 << 30
#: robustness.png has one panel per group up to this many groups; above, only the row over all images is drawn
MAX_PLOT_GROUPS = 8


def _group_of(pattern: re.Pattern[str] | None, image_id: str) -> str:
    if pattern is None:
        return "all"
    m = pattern.search(image_id)
    group = (m.group(1) if m.groups() else m.group(0)) if m else None
    return group or "other"  # (an optional group that took no part is None; an empty name says nothing either)


def score_conditions(
    predictor: Predictor,
    image: np.ndarray,
    mask: np.ndarray,
    image_id: str,
    conditions: list[tuple[str, int]],
    calibration: QualityCalibration | None,
    batch_size: int,
) -> list[dict[str, Any]]:
    """One image under every condition: Dice/IoU against the native mask, and the quality of each prediction.

    The conditions are scored a batch at a time, fewer for a large image (about :data:`CONDITION_BYTES` of
    full-size arrays at once): all 31 at once held 8.3 GB for one 4000x3000 photo."""
    per_condition = image.shape[0] * image.shape[1] * 13  # shifted image, probabilities, flipped, mask, target
    chunk = max(1, min(batch_size, CONDITION_BYTES // max(per_condition, 1)))
    rows: list[dict[str, Any]] = []
    for i in range(0, len(conditions), chunk):
        rows += _score_chunk(predictor, image, mask, image_id, conditions[i : i + chunk], calibration, batch_size)
    return rows


def _score_chunk(predictor, image, mask, image_id, conditions, calibration, batch_size) -> list[dict[str, Any]]:
    shifted = [image if s == "clean" else apply_shift(image, s, sev, image_seed(image_id, s, sev))
               for s, sev in conditions]  # fmt: skip
    probs = predictor.probabilities(shifted, batch_size)
    flipped = flipped_probabilities(predictor, shifted, batch_size) if calibration is not None else None
    preds = np.stack([p > predictor.threshold for p in probs])
    target = torch.from_numpy(np.require(mask, requirements=["C", "W"]))[None].expand(preds.shape)  # (a view)
    counts = confusion_counts(torch.from_numpy(preds), target)
    dice = dice_score(counts, reduction="none")[:, 0].tolist()
    iou = iou_score(counts, reduction="none")[:, 0].tolist()
    rows = []
    for k, (s, sev) in enumerate(conditions):
        row: dict[str, Any] = {"id": image_id, "shift": s, "severity": sev,
                               "parameter": "" if s == "clean" else SHIFTS[s].levels[sev - 1],
                               "dice": dice[k], "iou": iou[k], "area_px": int(preds[k].sum())}  # fmt: skip
        if flipped is not None:
            q = quality_from_probabilities(probs[k], flipped[k], calibration, predictor.threshold)
            row.update(score=q.score, review=q.review, agreement=q.agreement, margin=q.margin, components=q.components,
                       forced=q.area_fraction < calibration.min_area_fraction)  # fmt: skip
        rows.append(row)
    return rows


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _summarise(rows_by_cond: dict[tuple[str, str, int], list[dict[str, Any]]], quality: bool) -> list[dict[str, Any]]:
    """One row per (group, shift, severity): mean/sd Dice, paired drop against clean, failures, flags."""
    out = []
    for (group, s, sev), rows in rows_by_cond.items():
        d = np.array([r["dice"] for r in rows], float)
        clean = {r["id"]: r["dice"] for r in rows_by_cond.get((group, "clean", 0), [])}
        diffs = np.array([r["dice"] - clean[r["id"]] for r in rows if r["id"] in clean], float)
        row: dict[str, Any] = {
            "group": group, "shift": s, "severity": sev,
            "parameter": "" if s == "clean" else SHIFTS[s].levels[sev - 1], "n": int(d.size),
            "dice_mean": float(np.nanmean(d)), "dice_sd": float(np.nanstd(d, ddof=1)) if d.size > 1 else float("nan"),
            "drop_vs_clean": float(-np.nanmean(diffs)) + 0.0 if diffs.size else float("nan"),
            "n_dice_below_0.90": int((d < 0.9).sum()), "n_dice_below_0.50": int((d < 0.5).sum()),
        }  # fmt: skip
        if quality:
            flags = np.array([r["review"] for r in rows], bool)
            scores = np.array([r["score"] for r in rows], float)
            row.update({
                "flagged": int(flags.sum()), "mean_score": float(scores.mean()),
                "recall_dice_below_0.50": float(flags[d < 0.5].mean()) if (d < 0.5).any() else float("nan"),
                "auroc_dice_below_0.90": auroc(scores, d < 0.9),
            })  # fmt: skip
        out.append(row)
    return out


def _quality_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """AUROC for Dice < 0.90 and recall of Dice < 0.50 at the run's threshold, for clean and stressed predictions."""
    rep = {}
    for name, sel in (("clean", [r for r in rows if r["shift"] == "clean"]),
                      ("stressed", [r for r in rows if r["shift"] != "clean"]), ("all", rows)):  # fmt: skip
        if not sel:
            continue
        d = np.array([r["dice"] for r in sel], float)
        s = np.array([r["score"] for r in sel], float)
        f = np.array([r["review"] for r in sel], bool)
        rep[name] = {
            "n": len(sel), "n_dice_below_0.90": int((d < 0.9).sum()), "n_dice_below_0.50": int((d < 0.5).sum()),
            "auroc_dice_below_0.90": auroc(s, d < 0.9),
            "recall_dice_below_0.90": float(f[d < 0.9].mean()) if (d < 0.9).any() else None,
            "recall_dice_below_0.50": float(f[d < 0.5].mean()) if (d < 0.5).any() else None,
            "flagged_share_dice_ge_0.90": float(f[d >= 0.9].mean()) if (d >= 0.9).any() else None,
            "flagged": int(f.sum()),
        }  # fmt: skip
    return rep


def _markdown(meta: dict[str, Any], summary: list[dict[str, Any]], quality: bool) -> str:
    lines = [f"# Stress test: {meta['model']} ({meta['run']})", "",
             f"{meta['subset']} part of {meta['data']}, {meta['n_images']} images, native resolution, Dice % per-image "
             f"mean; drop = clean minus shifted, paired per image. "
             + (f"Quality threshold {_fmt(meta['quality_threshold'])} ({meta['quality_source']})." if quality
                else "No quality score (--no-quality)."), ""]  # fmt: skip
    head = "| group | shift | severity | parameter | n | Dice % | sd | drop | < 90 | < 50 |"
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if quality:
        head += " flagged | recall < 50 | AUROC < 90 |"
        rule += "---:|---:|---:|"
    lines += [head, rule]
    for r in summary:
        cells = [r["group"], r["shift"], str(r["severity"]), str(r["parameter"]), str(r["n"]),
                 f"{100 * r['dice_mean']:.2f}", f"{100 * r['dice_sd']:.2f}" if not math.isnan(r["dice_sd"]) else "-",
                 f"{100 * r['drop_vs_clean']:.2f}", str(r["n_dice_below_0.90"]), str(r["n_dice_below_0.50"])]
        if quality:
            rec, au = r["recall_dice_below_0.50"], r["auroc_dice_below_0.90"]
            cells += [str(r["flagged"]), "-" if math.isnan(rec) else f"{rec:.2f}",
                      "-" if math.isnan(au) else f"{au:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")  # fmt: skip
    if quality:
        lines += ["", "Quality score (all groups): " + json.dumps(jsonable(meta["quality"]))]
    return "\n".join(lines) + "\n"


def _plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in summary})
    if len(groups) > MAX_PLOT_GROUPS:  # one panel per image once made a 198,660-pixel-wide picture
        groups = ["all"] if "all" in groups else groups[:MAX_PLOT_GROUPS]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        rows = [r for r in summary if r["group"] == g]
        clean = next((r["dice_mean"] for r in rows if r["shift"] == "clean"), None)
        for s in dict.fromkeys(r["shift"] for r in rows if r["shift"] != "clean"):
            pts = sorted((r["severity"], r["dice_mean"]) for r in rows if r["shift"] == s)
            xs = [0] + [p[0] for p in pts]
            ys = [clean if clean is not None else np.nan] + [p[1] for p in pts]
            ax.plot(xs, [100 * y for y in ys], marker="o", label=s)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("Dice % (per-image mean)")
        ax.set_title(f"{title} [{g}]" if len(groups) > 1 else title, fontsize=9)
        ax.set_xticks([0, 1, 2, 3])
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, png.getvalue())


def even_pick(pairs: list, max_images: int) -> list:
    """An even, deterministic pick of ``max_images`` over the sorted pairs (all of them for 0)."""
    if max_images and max_images < len(pairs):
        idx = np.linspace(0, len(pairs) - 1, max_images).round().astype(int)
        pairs = [pairs[i] for i in sorted(set(idx.tolist()))]
    return pairs


def prepare_part(run_dir: Path, data: str | Path | None, subset: str, max_images: int, predictor: Predictor):
    cfg = RunDir(run_dir).load_config()
    data_root = Path(data) if data else data_root_of(cfg)
    pairs = even_pick(_subset_pairs(RunDir(run_dir), data_root, subset), max_images)
    return cfg, data_root, pairs, pair_reader(pairs, predictor, cfg.threshold_masks)


def pair_reader(pairs: list, predictor: Predictor, threshold_masks: bool) -> SegmentationDataset:
    """Images at their native size, with the model's channel count, for scoring."""
    return SegmentationDataset(pairs, in_channels=predictor.in_channels, size=None, threshold_masks=threshold_masks)


@contextmanager
def _partial_file(path: Path):
    """``path`` open for writing text; removed if the body fails or is stopped (a corrupt image, Ctrl+C, SIGTERM),
    so that no half-written table is left behind."""
    try:
        with path.open("w", newline="") as f:
            yield f
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def stress_test(
    run_dir: str | Path,
    out_dir: str | Path,
    data: str | Path | None = None,
    subset: str = "test",
    shifts: str | list[str] = "all",
    group_pattern: str | None = None,
    quality: bool = True,
    max_images: int = 0,
    checkpoint: str = "best",
    batch_size: int = 16,
    overwrite: bool = False,
    show_progress: bool = True,
    quality_file: str | Path | None = None,
) -> dict[str, Any]:
    """Re-score ``subset`` of the run's data under each shift and severity and write the report to ``out_dir``.

    Args:
        run_dir: a run folder or released weights' folder.
        out_dir: report folder: ``per_image.csv`` (one row per image, shift and severity), ``summary.csv`` and
            ``summary.md`` (Dice per shift and severity, paired drop against clean, failures, review flags),
            ``robustness.json`` (the same plus the quality-score report) and ``robustness.png``.
        data: dataset folder (default: the run's).
        subset: part of the run's split (``test``, ``val``, ``train``, ``all``).
        shifts: ``"all"`` (those of the run's modality) or names, see :data:`scunext.data.shifts.SHIFTS`.
        group_pattern: regular expression on the image id; its first group (or the match) names the group the
            summary is split by, e.g. ``^(MCUCXR|CHNCXR)`` for the lung sites. Unmatched ids go to ``other``.
        quality: also compute the quality score and review flag of every prediction (one extra flipped pass).
        max_images: score an even pick of this many images of the part (0 = all).
        overwrite: replace an earlier report in ``out_dir``; otherwise existing report files are an error.
        quality_file: a ``quality.json`` to use instead of the run's own (e.g. a site calibration).

    Returns:
        The content of ``robustness.json``.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise ValueError(f"--group-pattern {group_pattern!r} is not a valid regular expression ({exc})") from None
    if not overwrite:
        check_no_report(out, RESULT_FILES)
    # --no-quality uses no calibration: a run's quality.json of other weights (or a --quality FILE) is not read
    predictor = Predictor.from_run(run_dir, checkpoint, quality_file=quality_file if quality else None,
                                   calibrated=quality)  # fmt: skip
    names = parse_shifts(shifts, modality_of(predictor.in_channels))
    cfg, data_root, pairs, reader = prepare_part(run_dir, data, subset, max_images, predictor)
    if pattern is not None:  # "all" is the overall row: a group of that name was counted twice, silently
        clash = next((p.id for p in pairs if _group_of(pattern, p.id) == "all"), None)
        if clash is not None:
            raise ValueError(f"--group-pattern {group_pattern!r} names a group 'all' (image {clash}), the name of the "
                             "row over every image; change the pattern so that no group is called 'all'")  # fmt: skip
    conditions = shift_conditions(names)
    calibration = predictor.quality if quality else None
    # held from the first row to the last file: one stress test per folder
    with made_folder(out), report_lock(out, wait_s=0):
        if not overwrite:  # another one may have finished here since the check above
            check_no_report(out, RESULT_FILES)
        for orphan in orphan_temps(out, RESULT_FILES):  # left by a stress test killed in its final writes
            remove_tree(orphan)
        by_cond: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        qrows: list[dict[str, Any]] = []
        partial = out / "per_image.csv.partial"
        fields = PER_IMAGE_FIELDS if quality else PER_IMAGE_FIELDS[:8]
        bar = tqdm(total=len(pairs) * len(conditions), desc=f"stress {subset}", unit="pred", disable=not show_progress)
        with _partial_file(partial) as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            for i, pair in enumerate(pairs):
                image, mask = reader.load(i)
                if image.shape[2] == 1:
                    image = image[..., 0]
                group = _group_of(pattern, pair.id)
                rows = score_conditions(predictor, image, mask, pair.id, conditions, calibration, batch_size)
                for r in rows:
                    r["group"] = group
                    writer.writerow({k: _fmt(v) for k, v in r.items()})
                    keep = {k: r[k] for k in ("id", "dice", "score", "review") if k in r}
                    by_cond[(group, r["shift"], r["severity"])].append(keep)
                    if pattern is not None:
                        by_cond[("all", r["shift"], r["severity"])].append(keep)
                    if quality:
                        qrows.append({**keep, "shift": r["shift"]})
                bar.update(len(conditions))
        bar.close()
        # robustness.json is the report's completion marker, written last: an earlier report's marker goes before
        # any of its files is replaced, so a stress test stopped among its final writes never leaves a folder that
        # reads as complete with old and new files mixed
        remove_tree(out / "robustness.json")
        fsync_dir(out)
        rename(partial, out / "per_image.csv")

        order = {c: k for k, c in enumerate(conditions)}
        keys = sorted(by_cond, key=lambda k: (k[0] != "all", k[0], order[(k[1], k[2])]))
        summary = _summarise({k: by_cond[k] for k in keys}, quality)
        meta: dict[str, Any] = {
            "run": str(run_dir), "model": predictor.name, "intensity": predictor.intensity, "data": str(data_root),
            "subset": subset, "n_images": len(pairs), "shifts": {n: {"description": SHIFTS[n].description,
            "parameter": SHIFTS[n].parameter, "levels": list(SHIFTS[n].levels)} for n in names},
            "group_pattern": group_pattern, "resolution": "native (logits resized to each mask's size)",
            "reduction": "per-image mean Dice; drop = mean over images of (clean - shifted)",
            "quality_threshold": calibration.threshold if calibration else None,
            "quality_source": (str(quality_file) if quality_file else calibration.source) if calibration else "off",
            "quality": _quality_report(qrows) if quality else None,
        }  # fmt: skip
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, list(summary[0]))
        w.writeheader()
        w.writerows({k: _fmt(v) for k, v in r.items()} for r in summary)
        atomic_write_text(out / "summary.csv", buf.getvalue())
        atomic_write_text(out / "summary.md", _markdown(meta, summary, quality))
        try:
            _plot(summary, out / "robustness.png", f"{predictor.name} {Path(run_dir).name}: {subset}")
        except ImportError:  # matplotlib is in the train extra
            remove_tree(out / "robustness.png")  # an earlier report's plot would not match this report
            log.warning("matplotlib not installed: no robustness.png (pip install 'scunext[train]')")
        report = jsonable({**meta, "summary": summary})
        atomic_write_text(out / "robustness.json", json.dumps(report, indent=2))
        return report
