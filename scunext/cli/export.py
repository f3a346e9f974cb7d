"""``scunext export``: a trained run -> ONNX file, checked against eager PyTorch on real images."""

from __future__ import annotations

import argparse
from pathlib import Path

from scunext.cli.paths import Once, check_not_in_package, check_not_run_file, check_out_file, out_arg
from scunext.cli.weights import add_weights_option
from scunext.config import MAX_SIZE
from scunext.deploy.export import export_run, int8_path
from scunext.errors import UsageError
from scunext.runs import RunDir
from scunext.weights import weights_dir

__all__ = ["add_parser", "run"]

FORMATS = ("onnx",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's model to ONNX and check it against PyTorch",
        description="Write RUN_DIR's checkpoint as ONNX (BatchNorm folded; input 'image' (B, C, H, W) float32, "
        "output 'logits'; dynamic batch/H/W unless --no-dynamic), validate it with onnx.checker and print the "
        "largest logit difference between onnxruntime and eager PyTorch on real shipped sample images. "
        "Needs: pip install 'scunext[onnx]'.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a training run folder")
    add_weights_option(p, "export released weights instead of a RUN_DIR")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    p.add_argument("--out", action=Once, metavar="FILE",
                   help="output file (default RUN_DIR/model.onnx; NAME.onnx with --weights)")
    p.add_argument("--size", type=int, help="trace size; the fixed size with --no-dynamic (default: the run's size)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-dynamic", action="store_true", help="fixed 1 x C x SIZE x SIZE input instead of dynamic axes")
    p.add_argument(
        "--int8", action="store_true",
        help="also write FILE-int8.onnx (static int8, calibrated on the run's training images) and print its Dice "
        "change against fp32 on the run's test images",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.run_dir) == bool(args.weights):
        raise UsageError("give either a RUN_DIR or --weights NAME")
    out = out_arg(args.out)
    if args.weights:
        run_dir, out = weights_dir(args.weights), out or Path(f"{args.weights}.onnx")
    else:
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder not found: {run_dir}")
        if out is None:
            check_not_in_package(run_dir, "RUN_DIR/model.onnx")
        out = out or run_dir / "model.onnx"
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size must be a positive number of pixels, got {args.size}")
    if args.size is not None and args.size > MAX_SIZE:
        raise UsageError(f"--size {args.size} is above {MAX_SIZE}: tracing at that size would not fit in memory "
                         "(with dynamic axes the exported model still takes any size)")  # fmt: skip
    check_out_file(out, overwrite=args.overwrite)
    check_not_run_file(out, run_dir, own=RunDir.ONNX)
    if args.int8:
        int8_out = int8_path(out)
        check_out_file(int8_out, overwrite=args.overwrite, flag="--int8 output")
        check_not_run_file(int8_out, run_dir, own=int8_path(RunDir.ONNX).name, flag="--int8 output")
    report = export_run(
        run_dir, out, checkpoint=args.checkpoint, size=args.size, dynamic=not args.no_dynamic,
        int8=args.int8,
    )  # fmt: skip
    print(f"wrote {report['onnx']} ({report['model']}, {'dynamic' if report['dynamic'] else 'static'} axes)")
    print(f"max |logit difference| onnxruntime vs PyTorch: {report['max_abs_logit_diff']:.3g} "
          f"({report['parity_inputs']})")  # fmt: skip
    if args.int8:
        d = report["dice"]
        print(f"wrote {report['int8_onnx']} (calibrated on {report['calibration']})")
        print(f"int8 max |logit difference| vs PyTorch: {report['int8_max_abs_logit_diff']:.3g}")
        print(f"Dice fp32 {d['dice_reference']:.4f} -> int8 {d['dice_candidate']:.4f} "
              f"({d['change_points']:+.2f} points) on {d['on']}")  # fmt: skip
    return 0
