"""``scunext experiment table1|table2|leaderboard|cross-site``: resumable experiments on real data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scunext.cli.config_flags import add_config_flags, config_from_args
from scunext.cli.paths import Once
from scunext.config import apply_overrides
from scunext.data import discover_pairs
from scunext.engine.distributed import resolve_device
from scunext.errors import UsageError
from scunext.experiments import (
    CROSS_SITE_MODELS,
    TABLE1_MODELS,
    check_experiment_record,
    cross_site_plan,
    cross_site_scores,
    default_models,
    leaderboard_plan,
    parse_shard,
    run_plan,
    sites_from_csv,
    sites_from_pattern,
    summarize_cross_site,
    summarize_leaderboard,
    summarize_table1,
    summarize_table2,
    table1_plan,
    table2_plan,
)
from scunext.experiments.plan import check_count
from scunext.metrics.paired import MAX_N_BOOT
from scunext.profiling import check_threads

_OUTPUTS = {"table1": ("table1.md", "table1.csv", "table1_paired.csv", "table1.png"),
            "table2": ("table2.md", "table2.csv", "table2_paired.csv", "table2.png"),
            "leaderboard": ("leaderboard.md", "leaderboard.csv", "leaderboard_paired.csv", "leaderboard.png"),
            "cross-site": ("cross_site.md", "cross_site.csv", "cross_site_paired.csv")}  # fmt: skip
def _check_out(out: Path, records: Path | None, table: str) -> None:
    """``--out`` is an experiment's own folder: not the records folder (whose files are committed), and not a folder
    that holds tables without the ``experiment.json`` that says they are this experiment's (a user's earlier tables
    of another experiment would be overwritten)."""
    if records is not None and out.resolve() == records.resolve():
        raise UsageError("--out and --records are the same folder; the records folder holds only records (choose "
                         "another --out)")  # fmt: skip
    if records is not None and records.exists() and not records.is_dir():
        raise UsageError(f"--records {records} is a file, not a folder (the folder that holds one record per run)")
    if (out / "experiment.json").exists():
        return
    found = [f for outputs in _OUTPUTS.values() for f in outputs if (out / f).exists()]
    if found:
        raise UsageError(f"{out} holds {', '.join(found[:3])} but no experiment.json: not this experiment's folder, "
                         "and its tables would be replaced; choose another --out")  # fmt: skip


#: training settings an experiment shares between all its runs (its own runner sets model, split, seed, fold...)
SHARED_FLAGS = ("epochs", "max_train_images", "size", "lr", "min_lr", "batch_size", "weight_decay", "augment",
                "threshold_masks", "device", "num_workers", "amp", "amp_dtype", "cpu_amp", "channels_last",
                "eval_every")


def _budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder with images/ and masks/")
    p.add_argument("--out", action=Once, required=True,
                   help="experiment folder (one run folder per model x split inside)")
    p.add_argument("--config", metavar="FILE", help="YAML with shared training settings (lr, batch, augment...)")
    add_config_flags(p, SHARED_FLAGS)  # the same flags, help and checks as scunext train
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other shared config key, repeatable")
    p.add_argument("--shard", metavar="I/N", help="run only every N-th planned run from the I-th (N processes share "
                   "one --out); run once more without it to write the tables")  # fmt: skip
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables from the runs (and --records) finished so far")  # fmt: skip
    p.add_argument("--records", metavar="DIR", help="portable run records: each finished run's record (config, "
                   "split, log, metrics, per-image scores; no weights) is written to DIR/RUN, and the tables also "
                   "read the records there (e.g. docs/results/EXPERIMENT)")  # fmt: skip
    p.add_argument("--progress-bars", action="store_true", help="show per-run progress bars too")


def _models_arg(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    if not models:
        raise ValueError("--models is empty")
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:  # one row each: the experiment would record a list that its tables do not show
        raise ValueError(f"--models names {', '.join(twice)} more than once; give each model once")
    return models


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="resumable experiments: the paper's tables, leaderboard, cross-site",
                       description="Resumable experiment runners; see docs/experiments.md.")  # fmt: skip
    s = p.add_subparsers(dest="table", metavar="EXPERIMENT")
    s.required = True
    t1 = s.add_parser("table1", help="U-Net, ResUNet++, UNeXt-S, SC-UNeXt on N random 80/20 splits")
    _budget(t1)
    t1.add_argument("--seeds", type=int, default=3, help="random 80/20 splits (default 3)")
    t1.add_argument("--split", choices=["random", "csv"], default="random", help="random (default) or DATA/splits.csv")
    t1.add_argument("--models", default=",".join(TABLE1_MODELS), help="comma-separated models")
    t1.set_defaults(func=run)
    t2 = s.add_parser("table2", help="the 8-configuration ablation x k folds")
    _budget(t2)
    t2.add_argument("--folds", type=int, default=5)
    t2.add_argument("--images", type=int, default=120, help="seeded pick of N images (paper: 120); 0 = all")
    t2.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples of the paired CIs")
    t2.set_defaults(func=run)
    lb = s.add_parser("leaderboard", help="the lightest networks under one protocol, with paired statistics")
    _budget(lb)
    lb.add_argument("--seeds", type=int, default=3, help="training seeds (random split: also the split seed)")
    lb.add_argument("--split", choices=["random", "csv"], default="random",
                    help="random 80/20 per seed (default) or DATA/splits.csv for every seed")  # fmt: skip
    lb.add_argument("--models", help="comma-separated models (default: unext_s, sc_unext, malunet, egeunet, unext, "
                    "unet, those registered)")  # fmt: skip
    lb.add_argument("--threads", type=int, default=2, help="CPU threads for the latency column (default 2)")
    lb.add_argument("--latency-runs", type=int, default=20, help="timed runs per engine and round (default 20)")
    lb.add_argument("--no-latency", action="store_true", help="leave the latency column empty (no measurement)")
    lb.add_argument("--cross-site", metavar="DIR", help="a cross-site experiment (or its records) for that column")
    lb.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples of the paired CI")
    lb.set_defaults(func=run)
    cs = s.add_parser("cross-site", help="train on one site, score on its held-out part and on the other site(s)")
    _budget(cs)
    g = cs.add_mutually_exclusive_group(required=True)
    g.add_argument("--site-pattern", metavar="REGEX", help="site = group 1 of REGEX in each image id, e.g. "
                   "'^(MCUCXR|CHNCXR)_'")  # fmt: skip
    g.add_argument("--site-csv", metavar="FILE", help="CSV with an image_id column and a site column")
    cs.add_argument("--site-column", default="site", help="site column of --site-csv (default 'site')")
    cs.add_argument("--id-column", default="image_id", help="id column of --site-csv (default 'image_id')")
    cs.add_argument("--seeds", type=int, help="seeds per training site (default 3; 1 with --configs ablation)")
    cs.add_argument("--models", help=f"comma-separated models (default {','.join(CROSS_SITE_MODELS)})")
    cs.add_argument("--configs", choices=["ablation"], help="the paper's 8 Table 2 configurations instead of models")
    cs.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples of the paired CI")
    cs.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"data": str(Path(args.data).resolve())}
    shard = parse_shard(args.shard) if args.shard is not None else None  # "" is a mistake, not "no shard"
    if not 1 <= getattr(args, "n_boot", 1) <= MAX_N_BOOT:  # used by the tables after the last run: checked first
        raise ValueError(f"--n-boot must be between 1 and {MAX_N_BOOT:,}, got {args.n_boot}")
    if args.table in ("table1", "leaderboard"):
        overrides["split"] = args.split
    elif args.table == "table2":
        overrides["max_images"] = args.images
    base = apply_overrides(config_from_args(args), overrides).validate()
    out = Path(args.out)
    records = Path(args.records) if args.records else None
    _check_out(out, records, args.table)
    if args.table == "table1":
        models = _models_arg(args.models) or TABLE1_MODELS
        plan = table1_plan(base, args.seeds, models)
        record = {"table": "table1", "seeds": args.seeds, "models": list(models), "base_config": base.to_dict()}
    elif args.table == "table2":
        plan = table2_plan(base, args.folds)
        record = {"table": "table2", "folds": args.folds, "base_config": base.to_dict()}
    elif args.table == "leaderboard":
        if args.cross_site and not Path(args.cross_site).is_dir():  # read for the tables, after the last run
            raise UsageError(f"--cross-site {args.cross_site}: folder not found (the cross-site experiment's "
                             "records folder, or its --out)")  # fmt: skip
        if args.cross_site:  # ... and checked now (another dataset's runs, no runs at all), before any training
            cross_site_scores(Path(args.cross_site), data=base.data)
        if not args.no_latency:  # measured after the last training run: a mistake must not wait until then
            check_threads(args.threads)
            if args.latency_runs < 1:
                raise ValueError(f"--latency-runs must be >= 1, got {args.latency_runs}")
        models = _models_arg(args.models) or default_models()
        plan = leaderboard_plan(base, args.seeds, models)
        record = {"table": "leaderboard", "seeds": args.seeds, "models": list(models), "base_config": base.to_dict()}
    else:
        seeds = args.seeds if args.seeds is not None else (1 if args.configs else 3)
        check_count(seeds, "--seeds")  # (again in cross_site_plan) before the data is read to find the sites
        ids = [p.id for p in discover_pairs(Path(base.data))]
        if args.site_pattern is not None:
            sites = sites_from_pattern(ids, args.site_pattern)
            site_rule = {"pattern": args.site_pattern}
        else:
            sites = sites_from_csv(Path(args.site_csv), args.site_column, ids, args.id_column)
            site_rule = {"csv": str(Path(args.site_csv).resolve()), "column": args.site_column}
        models = _models_arg(args.models)
        if models and args.configs:
            raise ValueError("give --models or --configs, not both")
        record = {"table": "cross-site", "seeds": seeds, "models": list(models or CROSS_SITE_MODELS),
                  "configs": args.configs, "sites": site_rule, "base_config": base.to_dict()}  # fmt: skip
        cross_site_plan(base, sites, out, seeds, models, args.configs, write=False)  # all checks, nothing written
        check_experiment_record(out, record)
        plan = cross_site_plan(base, sites, out, seeds, models, args.configs)
    if not args.report_only:
        discover_pairs(Path(base.data))  # a missing or unusable dataset: one line before the experiment folder exists
        for pr in plan:  # a setting the runs' split ignores: one line now, not at the first run (trainer checks too)
            pr.cfg.check_split_settings()
    check_experiment_record(out, record)
    device = str(resolve_device(base.device))
    results = run_plan(plan, out, progress=lambda m: print(m, file=sys.stderr, flush=True),
                       show_bars=args.progress_bars, device=device, shard=shard,
                       report_only=args.report_only, records=records)  # fmt: skip
    if shard:
        done = sum(r["dice"] is not None for r in results)
        print(f"shard {args.shard} finished; {done}/{len(results)} runs of the experiment are done. Run the same "
              "command without --shard to write the tables.")  # fmt: skip
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if args.table == "table1":
        text = summarize_table1(results, out, base)
    elif args.table == "table2":
        text = summarize_table2(results, out, base, n_boot=args.n_boot)
    elif args.table == "leaderboard":
        text = _leaderboard_report(args, results, out, base, records)
    else:
        text = summarize_cross_site(results, out, base, n_boot=args.n_boot)
    print(text)
    print("written: " + ", ".join(str(out / f) for f in _OUTPUTS[args.table] if (out / f).exists()))
    return 0


def _leaderboard_report(args, results, out: Path, base, records: Path | None) -> str:
    from scunext.experiments.leaderboard import latencies
    from scunext.experiments.report import run_in_channels

    rows = list(dict.fromkeys(r["row"] for r in results))
    in_ch = base.in_channels or run_in_channels(results)
    cache = (records or out) / "latency.json"
    lat = None
    if not args.no_latency:
        print("measuring CPU latency (cached in " + str(cache) + ")", file=sys.stderr, flush=True)
        lat = latencies(rows, in_ch, cache, threads=args.threads, runs=args.latency_runs)
    xs = cross_site_scores(Path(args.cross_site), data=base.data) if args.cross_site else None
    return summarize_leaderboard(results, out, base, latency=lat, cross_site=xs, n_boot=args.n_boot)
