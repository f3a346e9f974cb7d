"""``scunext experiment table1|table2|leaderboard|cross-site``: resumable experiments on real data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scunext.cli.config_flags import add_config_flags, config_and_given_keys
from scunext.cli.paths import Once
from scunext.config import TrainConfig, apply_overrides
from scunext.engine.distributed import resolve_device
from scunext.errors import UsageError
from scunext.experiments import CROSS_SITE_MODELS, TABLE1_MODELS, parse_shard, run_plan
from scunext.experiments.build import OUTPUTS, ExperimentSpec, check_out, latency_cache, plan_experiment, write_tables
from scunext.metrics.paired import MAX_N_BOOT
from scunext.profiling import check_threads

#: training settings an experiment shares between all its runs (its own runner sets model, split, seed, fold...)
SHARED_FLAGS = ("epochs", "max_train_images", "size", "lr", "min_lr", "batch_size", "weight_decay", "augment",
                "threshold_masks", "device", "num_workers", "amp", "amp_dtype", "cpu_amp", "channels_last",
                "eval_every")


def _budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder with images/ and masks/")
    p.add_argument("--out", action=Once, required=True,
                   help="experiment folder (one run folder per model x split inside)")
    p.add_argument("--config", action=Once, metavar="FILE",
                   help="YAML with shared training settings (lr, batch, augment...)")
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


#: what sets, per run, the settings each experiment decides itself (anything else: "the experiment")
_OWN_FLAGS = {
    "table1": {"data": "--data", "split": "--split", "seed": "--seeds", "model": "--models"},
    "leaderboard": {"data": "--data", "split": "--split", "seed": "--seeds", "model": "--models"},
    "table2": {"data": "--data", "max_images": "--images", "fold": "--folds", "folds": "--folds",
               "split": "its k-fold split", "model": "its 8 configurations", "model_args": "its 8 configurations",
               "loss": "its 8 configurations"},
    "cross-site": {"data": "--data", "seed": "--seeds", "model": "--models or --configs",
                   "model_args": "--models or --configs", "loss": "--configs", "split": "its site split",
                   "split_csv": "its site split", "split_column": "its site split", "max_images": "its site split"},
}  # fmt: skip


def _check_own_settings(table: str, given: TrainConfig, keys: set[str], plan: list) -> None:
    """Refuse a --config or --set value that no run of the experiment keeps (a --config with ``split: csv`` trained
    every run on a random split, ``--set seed=7`` seeds 0-2, while experiment.json recorded the asked value). A
    value some runs keep is the experiment's design (``loss: bce_dice`` for the rows without the edge loss,
    ``model: sc_unext`` for its row, ``seed: 0`` for the first seed). ``given``: the settings as the user gave them,
    before the experiment's own flags; ``keys``: those the user named (in the file, a --set or a flag)."""
    mine = given.to_dict()
    replaced = []
    for key, value in mine.items():
        if key not in keys or not plan:
            continue
        if key == "data":
            kept = any(Path(r.cfg.data).resolve() == Path(value).resolve() for r in plan)
        else:
            kept = any(r.cfg.to_dict()[key] == value for r in plan)
        if not kept:
            replaced.append(key)
    if replaced:
        how = "; ".join(f"{k}: {_OWN_FLAGS.get(table, {}).get(k, 'the experiment')}" for k in replaced)
        it = "it" if len(replaced) == 1 else "them"
        raise UsageError(f"{', '.join(replaced)} from --config/--set would be replaced in every run: the experiment "
                         f"sets {it} itself ({how}); drop {it} from --config/--set")  # fmt: skip


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
    given, keys = config_and_given_keys(args)
    base = apply_overrides(given, overrides).validate()
    out = Path(args.out)
    records = Path(args.records) if args.records else None
    check_out(out, records)
    latency = None
    if args.table == "leaderboard" and not args.no_latency:  # measured after the last run: a mistake fails now
        check_threads(args.threads)
        if args.latency_runs < 1:
            raise ValueError(f"--latency-runs must be >= 1, got {args.latency_runs}")
        latency = {"threads": args.threads, "runs": args.latency_runs}
    spec = ExperimentSpec(
        args.table, base, out, seeds=getattr(args, "seeds", None), models=_models_arg(getattr(args, "models", None)),
        folds=getattr(args, "folds", 5),
        cross_site=Path(args.cross_site) if getattr(args, "cross_site", None) else None,
        site_pattern=getattr(args, "site_pattern", None),
        site_csv=Path(args.site_csv) if getattr(args, "site_csv", None) else None,
        site_column=getattr(args, "site_column", "site"), id_column=getattr(args, "id_column", "image_id"),
        configs=getattr(args, "configs", None),
    )  # fmt: skip
    plan = plan_experiment(spec, report_only=args.report_only,
                           check=lambda runs: _check_own_settings(args.table, given, keys, runs))
    device = str(resolve_device(base.device))
    results = run_plan(plan, out, progress=lambda m: print(m, file=sys.stderr, flush=True),
                       show_bars=args.progress_bars, device=device, shard=shard,
                       report_only=args.report_only, records=records)  # fmt: skip
    if shard:
        done = sum(r["dice"] is not None for r in results)
        print(f"shard {args.shard} finished; {done}/{len(results)} runs of the experiment are done. Run the same "
              "command without --shard to write the tables.")  # fmt: skip
        return 0
    if latency is not None:
        print(f"measuring CPU latency (cached in {latency_cache(out, records)})", file=sys.stderr, flush=True)
    text = write_tables(spec, results, records, n_boot=getattr(args, "n_boot", 10_000), latency=latency)
    print(text)
    print("written: " + ", ".join(str(out / f) for f in OUTPUTS[args.table] if (out / f).exists()))
    return 0
