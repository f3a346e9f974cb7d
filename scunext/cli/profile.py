"""``scunext profile``: parameters, MACs and CPU latency of registered models."""

from __future__ import annotations

import argparse
import json

import torch

from scunext.config import MAX_CHANNELS, MAX_SIZE
from scunext.errors import UsageError
from scunext.models import list_models
from scunext.profiling import MAC_COUNTER, ProfileResult, check_threads, profile_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="exact params, GMACs and batch-1 CPU latency",
        description="Exact parameter count, multiply-accumulates (GMACs, counted as torch.utils.flop_counter FLOPs/2) "
        "and batch-1 CPU latency (median of repeated runs after warm-up).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=list_models(), metavar="NAME", help=f"one of: {', '.join(list_models())}")
    which.add_argument("--all", action="store_true", help="every registered model, as a table")
    p.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    p.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--num-classes", type=int, default=1, help="output classes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the latency (default: torch's)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _table(results: list[ProfileResult]) -> str:
    lines = [f"{'model':<12} {'params':>12} {'GMACs':>8} {'latency ms (median)':>20} {'p90 ms':>8}"]
    for r in results:
        lat = "-" if r.latency_ms is None else f"{r.latency_ms:.2f}"
        p90 = "-" if r.latency_p90_ms is None else f"{r.latency_p90_ms:.2f}"
        lines.append(f"{r.model:<12} {r.params:>12,} {r.macs / 1e9:>8.3f} {lat:>20} {p90:>8}")  # (not gmacs: rounded)
    r0 = results[0]
    timing = (f"latency: median and p90 (interpolated) of {r0.latency_repeats} runs after {r0.latency_warmup} "
              "warm-up runs; " if r0.latency_repeats else "")  # fmt: skip
    lines.append(
        f"input 1x{r0.input_shape[1]}x{r0.input_shape[2]}x{r0.input_shape[3]}, batch 1, fp32 eager, "
        f"{r0.threads} threads, torch {r0.torch_version}, {r0.cpu}; {timing}MACs: {MAC_COUNTER}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.size < 1 or args.repeats < 1 or args.warmup < 0:
        raise UsageError("--size and --repeats must be positive and --warmup non-negative")
    check_threads(args.threads)
    if args.size > MAX_SIZE:
        raise UsageError(f"--size {args.size} is above {MAX_SIZE}: one such input alone would not fit in memory")
    if not (1 <= args.in_channels <= MAX_CHANNELS and 1 <= args.num_classes <= MAX_CHANNELS):
        raise UsageError(f"--in-channels and --num-classes must be between 1 and {MAX_CHANNELS}, got "
                         f"{args.in_channels} and {args.num_classes}")  # fmt: skip
    planes = max(args.in_channels, args.num_classes)
    if planes * args.size**2 > 3 * MAX_SIZE**2:
        raise UsageError(f"--in-channels {args.in_channels} / --num-classes {args.num_classes} at --size {args.size}: "
                         f"an input or output of {planes} x {args.size} x {args.size} values is above the limit of "
                         f"3 x {MAX_SIZE} x {MAX_SIZE} (the largest 3-channel input); use a smaller "
                         "--size")  # fmt: skip
    names = list_models() if args.all else [args.model]
    kw = dict(
        size=args.size, in_channels=args.in_channels, num_classes=args.num_classes, latency=not args.no_latency,
        warmup=args.warmup, repeats=args.repeats, threads=args.threads,
    )  # fmt: skip
    with torch.no_grad():
        results = [profile_model(n, **kw) for n in names]
    if args.json:
        payload = results[0].to_dict() if not args.all else {"models": [r.to_dict() for r in results]}
        print(json.dumps(payload, indent=2))
    else:
        print(_table(results))
    return 0
