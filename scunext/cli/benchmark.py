"""``scunext benchmark``: speed of a model per engine, as ratios to UNeXt-S eager measured in the same run."""

from __future__ import annotations

import argparse
import sys

from scunext.benchmark import BenchmarkConfig, dumps, format_report, run_benchmark
from scunext.config import MAX_SIZE
from scunext.deploy.runtimes import ENGINES
from scunext.deploy.stream_benchmark import KINDS, EndToEndConfig, format_end_to_end, run_end_to_end
from scunext.errors import UsageError
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
    e2e = p.add_argument_group(
        "end to end (--end-to-end)",
        "scunext predict on generated full-size files (2048x2048 PNG and DICOM, 4000x3000 JPEG): images/s and peak "
        "RSS of the streaming pipeline and of the pre-streaming predict, measured in the same run "
        "(docs/deployment.md)",
    )
    e2e.add_argument("--end-to-end", action="store_true", help="run this benchmark instead of the model one")
    e2e.add_argument("--n", default="100", help="comma-separated numbers of files (default 100)")
    e2e.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated input kinds, from {', '.join(KINDS)}")
    e2e.add_argument("--overlay", choices=["no", "yes", "both"], default="both", help="overlays written (default both)")
    e2e.add_argument("--engine", default="torch", choices=ENGINES, help="predict's --engine (default torch)")
    e2e.add_argument("--batch-size", type=int, default=8)
    e2e.add_argument("--workers", type=int, default=2)
    e2e.add_argument("--baseline-max-n", type=int, default=20,
                     help="files for the pre-streaming baseline, whose memory grows with N (default 20)")
    e2e.add_argument("--no-baseline", action="store_true", help="measure the streaming pipeline only")
    # the end-to-end options and their defaults: given without --end-to-end they are an error, not ignored while
    # the model benchmark (minutes) runs instead
    e2e_only = {a.dest: (a.option_strings[0], a.default) for a in e2e._group_actions if a.dest != "end_to_end"}
    # and the other way round: the model benchmark's own options, ignored by --end-to-end (its --engines onnxruntime
    # gave torch numbers there)
    model_only = {a.dest: (a.option_strings[0], a.default) for a in p._actions
                  if a.dest in ("model", "baseline", "engines", "size", "in_channels", "runs", "rounds", "no_memory")}
    p.set_defaults(func=run, e2e_only=e2e_only, model_only=model_only)


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--n takes comma-separated integers, got {text!r}") from None


def run_end_to_end_cli(args: argparse.Namespace) -> int:
    cfg = EndToEndConfig(
        n=_ints(args.n), kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
        overlays={"no": [False], "yes": [True], "both": [False, True]}[args.overlay], engine=args.engine,
        batch_size=args.batch_size, workers=args.workers, threads=args.threads, baseline=not args.no_baseline,
        baseline_max_n=args.baseline_max_n,
    )  # fmt: skip
    report = run_end_to_end(cfg, progress=lambda msg: print(msg, file=sys.stderr))
    print(dumps(report) if args.json else format_end_to_end(report))
    return 0


def _given(args: argparse.Namespace, options: dict) -> list[str]:
    return [flag for dest, (flag, default) in options.items() if getattr(args, dest) != default]


def run(args: argparse.Namespace) -> int:
    if args.end_to_end:
        given = _given(args, args.model_only)
        if given:
            what, them = ("is an option", "it") if len(given) == 1 else ("are options", "them")
            raise UsageError(f"{', '.join(given)} {what} of the model benchmark, not of --end-to-end (which sets "
                             f"its engine with --engine); drop {them}")  # fmt: skip
        return run_end_to_end_cli(args)
    given = _given(args, args.e2e_only)
    if given:
        what, them = ("is an option", "it") if len(given) == 1 else ("are options", "them")
        raise UsageError(f"{', '.join(given)} {what} of --end-to-end; add that flag, or drop {them} for the model "
                         "benchmark")  # fmt: skip
    if args.size > MAX_SIZE:
        raise UsageError(f"--size {args.size} is above {MAX_SIZE}: a batch of such inputs would not fit in memory")
    cfg = BenchmarkConfig(
        model=args.model, baseline=args.baseline, engines=[e.strip() for e in args.engines.split(",") if e.strip()],
        size=args.size, in_channels=args.in_channels, threads=args.threads, latency_runs=args.runs,
        rounds=args.rounds, memory=not args.no_memory,
    )  # fmt: skip
    report = run_benchmark(cfg, progress=lambda msg: print(msg, file=sys.stderr))
    print(dumps(report) if args.json else format_report(report))
    return 0
