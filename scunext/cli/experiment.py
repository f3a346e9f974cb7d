"""``scunext experiment table1|table2``: the paper's tables on real data, resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scunext.cli.config_flags import add_config_flags, config_from_args
from scunext.config import apply_overrides
from scunext.data import discover_pairs
from scunext.engine.distributed import resolve_device
from scunext.experiments import (
    TABLE1_MODELS,
    check_experiment_record,
    parse_shard,
    run_plan,
    summarize_table1,
    summarize_table2,
    table1_plan,
    table2_plan,
)

#: training settings an experiment shares between all its runs (its own runner sets model, split, seed, fold...)
SHARED_FLAGS = ("epochs", "max_train_images", "size", "lr", "min_lr", "batch_size", "weight_decay", "augment",
                "threshold_masks", "device", "num_workers", "amp", "amp_dtype", "channels_last", "eval_every")


def _budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder with images/ and masks/")
    p.add_argument("--out", required=True, help="experiment folder (one run folder per model x split inside)")
    p.add_argument("--config", metavar="FILE", help="YAML with shared training settings (lr, batch, augment...)")
    add_config_flags(p, SHARED_FLAGS)  # the same flags, help and checks as scunext train
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other shared config key, repeatable")
    p.add_argument("--shard", metavar="I/N", help="run only every N-th planned run from the I-th (N processes share "
                   "one --out); run once more without it to write the tables")  # fmt: skip
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables from the runs finished so far")  # fmt: skip
    p.add_argument("--progress-bars", action="store_true", help="show per-run progress bars too")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="reproduce the paper's Table 1 or Table 2 (resumable)",
                       description="Resumable experiment runners; see docs/results.md.")  # fmt: skip
    s = p.add_subparsers(dest="table", metavar="TABLE")
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
    t2.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"data": str(Path(args.data).resolve())}
    shard = parse_shard(args.shard) if args.shard else None
    if args.table == "table1":
        overrides["split"] = args.split
    else:
        overrides["max_images"] = args.images
    base = apply_overrides(config_from_args(args), overrides).validate()
    out = Path(args.out)
    if args.table == "table1":
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        plan = table1_plan(base, args.seeds, models)
        record = {"table": "table1", "seeds": args.seeds, "models": list(models), "base_config": base.to_dict()}
    else:
        plan = table2_plan(base, args.folds)
        record = {"table": "table2", "folds": args.folds, "base_config": base.to_dict()}
    discover_pairs(Path(base.data))  # a missing or unusable dataset: one line before the experiment folder exists
    check_experiment_record(out, record)
    device = str(resolve_device(base.device))
    results = run_plan(plan, out, progress=lambda m: print(m, file=sys.stderr, flush=True),
                       show_bars=args.progress_bars, device=device, shard=shard,
                       report_only=args.report_only)  # fmt: skip
    if shard:
        done = sum(r["dice"] is not None for r in results)
        print(f"shard {args.shard} finished; {done}/{len(results)} runs of the experiment are done. Run the same "
              "command without --shard to write the tables.")  # fmt: skip
        return 0
    text = (summarize_table1 if args.table == "table1" else summarize_table2)(results, out, base)
    print(text)
    print(f"written: {out / (args.table + '.md')}, {out / (args.table + '.csv')}, {out / (args.table + '.png')}")
    return 0
