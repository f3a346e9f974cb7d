"""``scunext evaluate``: score a trained run on held-out images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scunext.cli.paths import Once, check_not_in_package, check_out_folder, out_arg
from scunext.engine.evaluate import SUBSETS, evaluate_run

METRICS = ("dice", "iou", "precision", "recall", "specificity")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a run on its test part (or another subset / dataset)",
        description="Score the best checkpoint of RUN_DIR at native resolution: Dice, IoU, precision, recall, "
        "specificity (per-image mean +- sd, and pooled over all pixels) and HD95 in pixels. Writes metrics.json, "
        "per_image.csv and worst.png to RUN_DIR/eval/SUBSET (or --out).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help="dataset folder (default: the one the run was trained on)")
    p.add_argument("--subset", choices=SUBSETS, default="test", help="part of the run's split (default test)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--out", action=Once, help="report folder (default RUN_DIR/eval/SUBSET, whose report is replaced)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    p.add_argument("--no-hd95", action="store_true", help="skip HD95 (faster)")
    p.add_argument("--threshold-masks", action="store_true", help="binarise masks with values other than 0/1/255")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true", help="print the metrics JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if out_arg(args.out) is not None:
        check_out_folder(Path(args.out))
    else:
        check_not_in_package(args.run_dir, f"RUN_DIR/eval/{args.subset}/")
    report = evaluate_run(
        args.run_dir, data=args.data, subset=args.subset, checkpoint=args.checkpoint, out_dir=args.out,
        hd95=not args.no_hd95, threshold_masks=args.threshold_masks, device=args.device,
        show_progress=not args.no_progress, overwrite=args.overwrite,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['model']} on {report['subset']} of {report['data']} ({report['n_images']} images, native size)")
    print(f"{'metric':<12} {'per-image mean':>15} {'sd':>8} {'pooled':>8}")
    for m in METRICS:
        r = report[m]
        sd = "-" if r["per_image_std"] is None else f"{r['per_image_std']:.4f}"  # None: one image, sd undefined
        print(f"{m:<12} {r['per_image_mean']:>15.4f} {sd:>8} {r['pooled']:>8.4f}")
    if "hd95" in report:
        h = report["hd95"]
        mean = "n/a" if h["per_image_mean"] is None else f"{h['per_image_mean']:.2f}"
        print(f"{'hd95 (px)':<12} {mean:>15} (undefined for {h['n_undefined']} image(s) with one empty mask)")
    return 0
