"""``scunext robustness`` (acquisition-shift stress test) and ``scunext calibrate`` (quality-score threshold)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scunext.cli.paths import Once, check_not_in_package, check_not_run_file, check_out_file, check_out_folder, out_arg
from scunext.cli.weights import add_quality_option, add_weights_option
from scunext.data.shifts import SHIFTS
from scunext.deploy.quality import THRESHOLD_RULES
from scunext.engine.evaluate import SUBSETS
from scunext.runs import RunDir
from scunext.weights import weights_dir


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a training run folder (or give --weights)")
    add_weights_option(p, "released weights instead of a RUN_DIR")
    p.add_argument("--data", help="dataset folder (default: the one the run was trained on)")
    p.add_argument("--shifts", default="all",
                   help=f"'all' (those of the model's modality) or a comma list of: {', '.join(SHIFTS)}")  # fmt: skip
    p.add_argument("--max-images", type=int, default=0, help="score an even pick of N images of the part (0 = all)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report / quality.json")
    p.add_argument("--no-progress", action="store_true")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "robustness",
        help="stress test: Dice under acquisition shifts (gamma, wash-out, noise, JPEG, ...) and severities",
        description="Re-score a part of the run's split under each acquisition shift and severity (docs/robustness.md)"
        ", at native resolution with the per-image metrics of evaluate. Writes per_image.csv, summary.csv, "
        "summary.md, robustness.json and robustness.png to --out.",
    )
    _model_args(p)
    p.add_argument("--subset", choices=SUBSETS, default="test", help="part of the run's split (default test)")
    p.add_argument("--out", action=Once, required=True, help="report folder")
    p.add_argument("--group-pattern", metavar="REGEX",
                   help="split the summary by this regex on the image id (first group), e.g. '^(MCUCXR|CHNCXR)'")
    p.add_argument("--no-quality", action="store_true", help="skip the quality score (half the work)")
    add_quality_option(p)
    p.add_argument("--json", action="store_true", help="print robustness.json")
    p.set_defaults(func=run)

    c = sub.add_parser(
        "calibrate",
        help="choose the quality-score review threshold of a run on its validation part (writes quality.json)",
        description="Area prior from the run's training masks, review threshold from its validation part scored "
        "clean and under the acquisition shifts; writes RUN_DIR/quality.json (or --out), which predict, serve and "
        "robustness then use (docs/robustness.md). With --site DIR the threshold is chosen on a labelled folder of "
        "local images instead (a new hospital), written to --out and used with predict/robustness/serve "
        "--quality FILE.",
    )
    _model_args(c)
    c.add_argument("--out", action=Once, help="file to write (default RUN_DIR/quality.json; required with --site)")
    c.add_argument("--site", metavar="DIR",
                   help="a labelled folder of local images (images/ + masks/, e.g. 10-20 from a new hospital): "
                   "choose the threshold on all of them instead of the run's validation part, keeping the run's "
                   "area prior; use the result with predict/robustness/serve --quality FILE")  # fmt: skip
    c.add_argument("--rule", choices=THRESHOLD_RULES, default="youden",
                   help="youden (default): best Youden index for Dice < 0.90, raised to flag every validation Dice "
                   "< 0.50; failures: the lowest threshold that flags every validation Dice < 0.50 (fewer false "
                   "alarms at a new site)")  # fmt: skip
    c.set_defaults(func=run_calibrate)


def _run_dir(args: argparse.Namespace) -> Path:
    if bool(args.run_dir) == bool(args.weights):
        raise ValueError("give either a RUN_DIR or --weights NAME")
    if args.weights:
        return weights_dir(args.weights)
    run_dir = Path(args.run_dir)
    RunDir(run_dir).load_config()  # one line when it is not a run folder
    return run_dir


def _check_max_images(args: argparse.Namespace) -> None:
    if args.max_images < 0:
        raise ValueError(f"--max-images must be >= 0, got {args.max_images}")


def run(args: argparse.Namespace) -> int:
    from scunext.engine.robustness import stress_test

    check_out_folder(out_arg(args.out))
    run_dir = _run_dir(args)
    _check_max_images(args)
    report = stress_test(
        run_dir, args.out, data=args.data, subset=args.subset, shifts=args.shifts, group_pattern=args.group_pattern,
        quality=not args.no_quality, max_images=args.max_images, checkpoint=args.checkpoint,
        overwrite=args.overwrite, show_progress=not args.no_progress, quality_file=args.quality,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print((Path(args.out) / "summary.md").read_text(), end="")
    print(f"wrote {args.out}/per_image.csv, summary.csv, summary.md, robustness.json, robustness.png")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from scunext.engine.calibrate import calibrate_quality

    if out_arg(args.out) is not None:
        check_out_file(Path(args.out), overwrite=args.overwrite, example="quality.json")
    run_dir = _run_dir(args)
    if out_arg(args.out) is not None:
        check_not_run_file(Path(args.out), run_dir, own=RunDir.QUALITY)
    _check_max_images(args)
    if args.site and args.data:
        raise ValueError("give --site DIR (a local labelled folder) or --data DIR (the run's own dataset), not both")
    if out_arg(args.out) is None and not args.site:  # (a site calibration always needs --out)
        check_not_in_package(run_dir, "RUN_DIR/quality.json, shipped with the weights")
    cal = calibrate_quality(run_dir, data=args.data, shifts=args.shifts, out=args.out, max_images=args.max_images,
                            checkpoint=args.checkpoint, overwrite=args.overwrite,
                            show_progress=not args.no_progress, rule=args.rule, site=args.site)  # fmt: skip
    st = cal.stats
    part = "site" if args.site else "validation"
    auc = st["auroc_dice_below_0.90"]  # None (JSON null) when every prediction is on one side of Dice 0.90
    auc = "n/a (every Dice on one side of 0.90)" if auc is None else f"{auc:.3f}"
    print(f"review threshold {cal.threshold:.4f} on {st['n']} {part} predictions ({st['n_images']} images x "
          f"{st['conditions']} conditions): AUROC for Dice < 0.90 {auc}, "
          f"flags {st['flagged_share']:.1%}; area prior {cal.area_lo:.3f}..{cal.area_hi:.3f} of the image "
          f"(near-empty below {cal.min_area_fraction:.4f})")  # fmt: skip
    if args.site:
        print(f"the run's own threshold: {st['run_threshold']:.4f}")
    print(f"wrote {args.out or run_dir / 'quality.json'}")
    return 0
