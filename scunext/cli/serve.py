"""``scunext serve``: a local web page to try trained models on uploaded images."""

from __future__ import annotations

import argparse

from scunext.cli.weights import add_quality_option, add_weights_option
from scunext.data import MAX_IMAGE_PIXELS
from scunext.data.io import PILLOW_MAX_PIXELS
from scunext.deploy.quality import QualityCalibration
from scunext.deploy.runtimes import ENGINES
from scunext.errors import UsageError, missing_dependency
from scunext.weights import list_weights, weights_dir

# The same defaults as scunext.serve (importing it needs Flask); tests/test_serve.py checks that they agree.
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_WORKERS = 2
DEFAULT_QUEUE = 4
DEFAULT_READ_TIMEOUT_S = 30.0
MAX_WORKERS = 64
MAX_QUEUE = 256
MAX_UPLOAD_MB_LIMIT = 1024
MAX_MEGAPIXELS_LIMIT = PILLOW_MAX_PIXELS // 1_000_000  # Pillow's hard limit, 178 (scunext.serve.app's too)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page to try trained models on your images",
        description="Serve a web page where a PNG, JPEG or DICOM image can be uploaded and segmented by the model of "
        "one of the RUN_DIRs or released --weights: it shows the mask overlay, the segmented area, the inference "
        "time and a mask PNG to download. Local use only: binds to 127.0.0.1 unless --host says otherwise. Needs "
        "the 'serve' extra (pip install 'scunext[serve]').",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="training run folders; one model entry each")
    add_weights_option(p, "released weights to offer (repeatable)", repeatable=True)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    add_quality_option(p)
    p.add_argument("--engine", choices=ENGINES, default="torch", help="inference engine (default torch)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest accepted request body in MB (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=MAX_IMAGE_PIXELS / 1e6,
        help=f"largest accepted image, width x height in megapixels (default {MAX_IMAGE_PIXELS / 1e6:g}); "
        "larger images are refused before decoding",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"images decoded, segmented and encoded at once (default {DEFAULT_WORKERS}); each can hold a few "
        "hundred MB for the largest images",
    )
    p.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        help=f"uploads that may wait for a worker (default {DEFAULT_QUEUE}); more get 503 with Retry-After",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_S,
        help=f"seconds a connection may stay silent before it is closed (default {DEFAULT_READ_TIMEOUT_S:g}): an "
        "upload that stops arriving gets 408 and frees its place",
    )
    p.set_defaults(func=run)


def models_from_args(args: argparse.Namespace) -> list:
    """The models to offer: one per RUN_DIR, then one per ``--weights NAME``."""
    from scunext.serve import load_models

    folders = [*args.run_dirs, *(weights_dir(n) for n in args.weights)]
    if args.quality:
        QualityCalibration.from_json(args.quality)  # a broken file before any model is loaded
    return load_models(folders, checkpoint=args.checkpoint, device=args.device, engine=args.engine,
                       quality_file=args.quality)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if not args.run_dirs and not args.weights:
        raise UsageError("give at least one RUN_DIR (a training run folder) or --weights NAME "
                       f"({', '.join(list_weights())})")  # fmt: skip
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if not 0 < args.max_upload_mb <= MAX_UPLOAD_MB_LIMIT:
        raise UsageError(f"--max-upload-mb must be in (0, {MAX_UPLOAD_MB_LIMIT}], got {args.max_upload_mb}")
    if not 0 < args.max_megapixels <= MAX_MEGAPIXELS_LIMIT:
        raise UsageError(f"--max-megapixels must be in (0, {MAX_MEGAPIXELS_LIMIT}], got {args.max_megapixels}")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, got {args.workers}")
    if not 0 <= args.queue <= MAX_QUEUE:
        raise UsageError(f"--queue must be between 0 and {MAX_QUEUE}, got {args.queue}")
    if not 0 < args.read_timeout < float("inf"):
        raise UsageError(f"--read-timeout must be a positive number of seconds, got {args.read_timeout}")
    if args.quality and len(args.run_dirs) + len(args.weights) != 1:
        raise UsageError("--quality FILE applies to one model: serve exactly one RUN_DIR or --weights NAME with it")
    try:
        from scunext.serve import serve
        from scunext.serve.app import check_listen
    except ImportError as exc:
        missing = missing_dependency(exc, "scunext serve")
        if missing is None:
            raise  # not a missing extra: a bug
        raise missing from exc
    check_listen(args.host, args.port)  # before the models load (serve() checks again)
    models = models_from_args(args)
    serve(
        models,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        max_pixels=int(args.max_megapixels * 1e6),
        workers=args.workers,
        queue=args.queue,
        read_timeout=args.read_timeout,
    )
    return 0
