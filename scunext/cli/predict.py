"""``scunext predict``: segment image files or folders with a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from scunext.cli.weights import add_weights_option
from scunext.data import IMAGE_EXTENSIONS, read_image
from scunext.deploy.predictor import Predictor
from scunext.deploy.runtimes import ENGINES
from scunext.visualize import overlay
from scunext.weights import list_weights, weights_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="masks (PNG, native resolution) and overlays for images",
        description="For each input image (files or folders), write OUT/NAME_mask.png (0/255, the input's own "
        "size) and OUT/NAME_overlay.png. All inputs are read and checked before anything is written.",
    )
    p.add_argument("paths", nargs="+", metavar="[RUN_DIR] INPUT",
                   help="a training run folder (unless --weights is given), then image files or folders of images")
    add_weights_option(p, "released weights instead of a RUN_DIR")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold (default 0.5)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument(
        "--engine", default="torch", choices=ENGINES,
        help="CPU inference engine (default torch; onnxruntime is the fastest, see docs/deployment.md)",
    )  # fmt: skip
    p.set_defaults(func=run)


def model_source(weights: str | None, paths: list[str]) -> tuple[Path, list[str]]:
    """``(run folder, inputs)``: the released weights' folder and all paths, or the first path and the rest."""
    if weights:
        return weights_dir(weights), list(paths)
    run_dir = Path(paths[0])
    if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run folder (no config.yaml); give a RUN_DIR first, "
                                f"or --weights NAME ({', '.join(list_weights())})")  # fmt: skip
    return run_dir, list(paths[1:])


def collect_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    stems = [f.stem for f in files]
    dups = sorted({s for s in stems if stems.count(s) > 1})
    if dups:
        raise ValueError(f"several inputs share the name {dups[0]!r}; their outputs would overwrite each other")
    return files


def run(args: argparse.Namespace) -> int:
    if not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    run_dir, inputs = model_source(args.weights, args.paths)
    if not inputs:
        raise ValueError("give at least one INPUT image or folder after RUN_DIR")
    files = collect_inputs(inputs)
    predictor = Predictor.from_run(run_dir, args.checkpoint, device=args.device, engine=args.engine)
    predictor.threshold = args.threshold
    images = [read_image(f) for f in files]  # every input checked before anything is written
    masks = predictor.predict(images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f, im, m in zip(files, images, masks):
        Image.fromarray((m * 255).astype(np.uint8)).save(out / f"{f.stem}_mask.png")
        Image.fromarray(overlay(im, m)).save(out / f"{f.stem}_overlay.png")
        area = int(m.sum())
        print(f"{f}: {area} px ({100 * area / m.size:.2f}% of image) -> {out / (f.stem + '_mask.png')}")
    return 0
