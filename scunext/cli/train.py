"""``scunext train``: train a registered model on a folder of images and masks (or resume a run)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from scunext.cli.config_flags import add_config_flags, config_from_args, given_flags
from scunext.cli.paths import Once, check_out_folder, out_arg
from scunext.errors import UsageError
from scunext.runs import RunDir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (Adam + cosine, best checkpoint on a validation part carved from training)",
        description="Train on a folder with images/ and masks/ (default: the shipped ISIC 2017 sample). Defaults "
        "follow the paper (Adam beta1 0.9, lr 1e-4 cosine to 1e-5, batch 8); a YAML --config sets them, --set "
        "KEY=VALUE and the flags below override, and the resolved config is saved in the run folder. Every flag "
        "of a config key is generated from scunext.config.TrainConfig. Under torchrun the same command runs DDP. "
        "Exit codes: 0 done, 1 the run failed on its own (non-finite loss), 2 a usage, config or data error.",
    )
    p.add_argument("--config", action=Once, metavar="FILE", help="YAML config file (keys as in config.yaml of a run)")
    add_config_flags(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config key, repeatable (augment.KEY=VALUE for one augmentation option)")  # fmt: skip
    p.add_argument("--out", action=Once, metavar="RUN_DIR", help="run folder (default runs/MODEL-YYYYmmdd-HHMMSS)")
    p.add_argument("--resume", action=Once, metavar="RUN_DIR",
                   help="continue an interrupted run exactly where it stopped")
    p.add_argument("--evaluate", action="store_true", help="evaluate the best checkpoint on the test part after")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scunext.engine.trainer import train

    resume = out_arg(args.resume, "--resume")  # "" (an unset variable) started a new default run instead
    out = out_arg(args.out)
    if resume is not None:
        where = RunDir.MOVABLE  # may change on resume (another machine), recorded in run.json
        given = given_flags(args, where) + [f"--{k}" for k in ("config", "set", "out") if getattr(args, k) is not None]
        if given:
            raise UsageError(f"--resume continues the run with its saved config; drop {', '.join(given)} "
                             "(only --device, --data and --num-workers may change)")  # fmt: skip
        result = train(None, resume, resume=True, show_progress=not args.no_progress,
                       resume_overrides={k: getattr(args, k, None) for k in where})  # fmt: skip
    else:
        cfg = config_from_args(args)
        if out is not None:
            check_out_folder(out)
        out = out if out is not None else Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = train(cfg, out, show_progress=not args.no_progress)

    import torch.distributed as dist  # noqa: F401

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"run: {result.run_dir}  best validation Dice {result.best_val_dice:.4f} at epoch {result.best_epoch} "
          f"({result.seconds:.0f} s)")  # fmt: skip
    if args.evaluate:
        from scunext.engine.evaluate import evaluate_run

        report = evaluate_run(result.run_dir, show_progress=not args.no_progress)
        print(json.dumps({"test_dice": report["dice"], "test_iou": report["iou"]}, indent=2))
    return 0
