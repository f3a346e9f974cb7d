"""``scunext benchmark``: speed of a model per engine, as ratios to UNeXt-S eager measured in the same run."""

from __future__ import annotations

import argparse
import sys

from scunext.benchmark import BenchmarkConfig, dumps, format_report, run_benchmark
from scunext.deploy.runtimes import ENGINES
from scunext.models import list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="latency, throughput, memory and training speed per engine, as ratios to a baseline",
        description="Batch-1 latency (median, p90), throughput at batch 8 and 32, peak memory and training "
        "images/s of --model on each engine, and of --baseline on eager PyTorch fp32 in the same run; every figure "
        "also as a ratio to the baseline, with the machine's GEMM compute floor.",
    )
    p.add_argument("--model", default="sc_unext", choices=list_models(), metavar="NAME")
    p.add_argument("--baseline", default="unext_s", choices=list_models(), metavar="NAME")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from: {', '.join(ENGINES)}")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--in-channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads (default 2)")
    p.add_argument("--runs", type=int, default=30, help="timed batch-1 runs per round (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = BenchmarkConfig(
        model=args.model, baseline=args.baseline, engines=[e.strip() for e in args.engines.split(",") if e.strip()],
        size=args.size, in_channels=args.in_channels, threads=args.threads, latency_runs=args.runs,
        rounds=args.rounds, memory=not args.no_memory,
    )  # fmt: skip
    report = run_benchmark(cfg, progress=lambda msg: print(msg, file=sys.stderr))
    print(dumps(report) if args.json else format_report(report))
    return 0
