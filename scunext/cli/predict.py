"""``scunext predict``: segment image files or folders with a trained run (streaming, see scunext.deploy.stream)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from scunext.cli.output import Echo
from scunext.cli.paths import Once
from scunext.cli.weights import add_quality_option, add_weights_option
from scunext.deploy.predictor import Predictor
from scunext.deploy.quality import QualityCalibration
from scunext.deploy.runtimes import ENGINES
from scunext.deploy.stream import (
    CSV_NAME,
    FORMATS,
    MAX_BATCH_SIZE,
    MAX_WORKERS,
    PredictionsCSV,
    plan_predictions,
    stream_predict,
)
from scunext.runs import RunDir
from scunext.weights import list_weights, weights_dir

DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="masks (PNG or DICOM SEG, native resolution), overlays and predictions.csv for images",
        description="For each input image (files or folders; folders are not searched recursively and earlier "
        "outputs in them are left out), write OUT/NAME_mask.png (0/255, the input's own size; NAME_seg.dcm with "
        "--format dicom-seg), OUT/NAME_overlay.png unless --no-overlay, and one row of OUT/predictions.csv (appended "
        "to when it exists). Every "
        "input is checked (header, size) and every output name is checked before anything is written; existing "
        "files are never replaced without --overwrite. Images stream through a bounded pipeline, so memory does not "
        "grow with the number of inputs. Exit status 1 when some files were skipped (listed in the summary).",
    )
    p.add_argument("paths", nargs="+", metavar="[RUN_DIR] INPUT",
                   help="a training run folder (unless --weights is given), then image files or folders of images")
    add_weights_option(p, "released weights instead of a RUN_DIR")
    p.add_argument("--out", action=Once, required=True, help="output folder (not an input folder)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold (default 0.5)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument(
        "--engine", default="torch", choices=ENGINES,
        help="CPU inference engine (default torch; onnxruntime is the fastest, see docs/deployment.md)",
    )  # fmt: skip
    p.add_argument("--format", default="png", choices=FORMATS, dest="fmt",
                   help="mask format: png (default) or dicom-seg (a DICOM Segmentation per DICOM input)")
    p.add_argument("--no-overlay", action="store_true", help="write masks only (faster)")
    p.add_argument("--fast-decode", action="store_true", help="with --no-overlay: decode large JPEGs at reduced "
                   "size (several times cheaper; the mask can then move along its boundary by up to one model pixel "
                   "against the default full decode, docs/deployment.md)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--skip-done", action="store_true", help="continue a stopped run into the same --out: leave out "
                   "the inputs it finished (mask written and recorded in predictions.csv), redo the others")
    p.add_argument("--no-quality", action="store_true", help="no quality score / review flag (saves one flipped "
                   "forward pass per image)")  # fmt: skip
    add_quality_option(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"decode/write threads (default {DEFAULT_WORKERS}: this machine's cores, at most 4)")
    p.set_defaults(func=run)


def model_source(weights: str | None, paths: list[str]) -> tuple[Path, list[str]]:
    """``(run folder, inputs)``: the released weights' folder and all paths, or the first path and the rest."""
    if weights:
        return weights_dir(weights), list(paths)
    run_dir = Path(paths[0])
    if not run_dir.is_dir() or not RunDir(run_dir).config_file.is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run folder (no config.yaml); give a RUN_DIR first, "
                                f"or --weights NAME ({', '.join(list_weights())})")  # fmt: skip
    return run_dir, list(paths[1:])


def _segment(args: argparse.Namespace, run_dir: Path) -> str:
    """What a DICOM SEG's segment is coded as (``auto`` unless --format dicom-seg)."""
    if args.fmt != "dicom-seg":
        return "auto"
    from scunext.deploy.dicom_seg import segment_for_run

    return segment_for_run(run_dir, args.weights)


#: the one-line summary suggests recalibrating when more than this share of at least SITE_HINT_MIN images is flagged
SITE_HINT_SHARE, SITE_HINT_MIN = 0.5, 10


class _Tally:
    """A count and the first few file names (memory does not grow with the number of inputs)."""

    def __init__(self, limit: int = 3) -> None:
        self.count, self.names, self.limit = 0, [], limit

    def add(self, record) -> None:
        self.count += 1
        if len(self.names) < self.limit:
            self.names.append(Path(record.file).name)

    def __str__(self) -> str:
        return ", ".join(self.names) + (", ..." if self.count > self.limit else "")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    for name, most in (("batch_size", MAX_BATCH_SIZE), ("workers", MAX_WORKERS)):
        if not 1 <= getattr(args, name) <= most:
            raise ValueError(f"--{name.replace('_', '-')} must be between 1 and {most}, got {getattr(args, name)}")
    if args.fast_decode and not args.no_overlay:
        raise ValueError("--fast-decode needs --no-overlay (an overlay is drawn on the full-size pixels)")
    if args.quality and args.no_quality:
        raise ValueError("--quality and --no-quality contradict each other; give one")
    if args.quality:
        QualityCalibration.from_json(args.quality)  # a broken file before any other work
    run_dir, inputs = model_source(args.weights, args.paths)
    if not inputs:
        raise ValueError("give at least one INPUT image or folder after RUN_DIR")
    if not args.out.strip():
        raise ValueError("--out is empty; give an output folder")
    out = Path(args.out)
    version = f"weights {args.weights}" if args.weights else f"{run_dir.resolve().name} ({args.checkpoint})"
    # predictions.csv `model`: what made a mask. The weights' hash, not only the folder's name: two experiments'
    # runs of the same name, a run retrained into its folder or a resumed run's new best are other weights
    sha = RunDir(run_dir).weights_sha256(args.checkpoint)[:12]
    label = f"{version}, sha256 {sha}, threshold {args.threshold:g}, {args.engine}"
    jobs = plan_predictions(inputs, out, fmt=args.fmt, overlay=not args.no_overlay, overwrite=args.overwrite,
                            skip_done=args.skip_done, model=label)
    predictor = Predictor.from_run(run_dir, args.checkpoint, device=args.device, engine=args.engine,
                                   quality_file=args.quality, calibrated=not args.no_quality)  # fmt: skip
    predictor.threshold = args.threshold
    out.mkdir(parents=True, exist_ok=True)
    skipped, flagged, start = _Tally(), _Tally(), time.perf_counter()
    echo = Echo()
    with PredictionsCSV(out / CSV_NAME, replace=args.overwrite) as table, \
            tqdm(total=len(jobs), unit="image", desc="predict", disable=None) as bar:  # fmt: skip
        records = stream_predict(predictor, jobs, batch_size=args.batch_size, workers=args.workers, fmt=args.fmt,
                                 overwrite=args.overwrite or args.skip_done,  # (what a stopped run left)
                                 model_version=version, quality=not args.no_quality,
                                 model_name=args.weights or predictor.name,
                                 segment=_segment(args, run_dir), fast_decode=args.fast_decode)  # fmt: skip
        for rec in records:
            rec.model = label
            table.write(rec)
            bar.update()
            if rec.ok:
                mm2 = f", {rec.area_mm2:.1f} mm2" if rec.area_mm2 is not None else ""
                flag = "" if rec.score is None else f", quality {rec.score:.2f}" + (
                    f", REVIEW ({rec.review_reason})" if rec.review else "")
                if rec.review:
                    flagged.add(rec)
                echo(f"{rec.file}: {rec.area_px} px ({100 * rec.area_px / (rec.height * rec.width):.2f}% of "
                     f"image{mm2}{flag}) -> {rec.mask}")  # fmt: skip
            else:
                skipped.add(rec)
                echo(f"scunext predict: {rec.file}: {rec.status}", sys.stderr)
    secs = time.perf_counter() - start
    done = len(jobs) - skipped.count
    summary = f"{done} of {len(jobs)} images segmented in {secs:.1f} s ({len(jobs) / max(secs, 1e-9):.1f} images/s)"
    if not args.no_quality:
        summary += f"; {flagged.count} flagged for review" + (f" ({flagged})" if flagged.count else "")
    if skipped.count:
        summary += f"; {skipped.count} skipped ({skipped})"
    echo(f"{summary}; table: {out / CSV_NAME}")
    if not args.no_quality and done >= SITE_HINT_MIN and flagged.count > SITE_HINT_SHARE * done:
        echo(f"note: {100 * flagged.count / done:.0f} % of the masks are flagged: these images may come from a "
              "site, scanner or protocol unlike the training data. Check a few masks; if they are good, recalibrate "
              "the review threshold on a few labelled local images (scunext calibrate, docs/robustness.md).")
    return 1 if skipped.count else 0
