"""``scunext train``: train a registered model on a folder of images and masks (or resume a run)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from scunext.config import TrainConfig, load_config
from scunext.models import list_models


def parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=true"]`` -> ``{"a": 1, "b": True}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model (Adam + cosine, best checkpoint on a validation part carved from training)",
        description="Train on a folder with images/ and masks/ (default: the shipped ISIC 2017 sample). Defaults "
        "follow the paper (Adam beta1 0.9, lr 1e-4 cosine to 1e-5, batch 8); a YAML --config sets them, flags "
        "override, and the resolved config is saved in the run folder. Under torchrun the same command runs DDP.",
    )
    p.add_argument("--config", help="YAML config file (keys as in config.yaml of a run)")
    p.add_argument("--model", choices=list_models(), metavar="NAME", help=f"one of {', '.join(list_models())}")
    p.add_argument("--data", help="dataset folder with images/ and masks/ (default: shipped ISIC 2017 sample)")
    p.add_argument("--split", choices=["random", "kfold", "csv"], help="random 80/20 (default), k-fold or CSV column")
    p.add_argument("--test-fraction", type=float, help=f"held-out part of a random split (default {d.test_fraction})")
    p.add_argument("--val-fraction", type=float, help=f"validation carved from training (default {d.val_fraction})")
    p.add_argument("--folds", type=int, help=f"k of k-fold (default {d.folds})")
    p.add_argument("--fold", type=int, help="which fold is held out (0-based)")
    p.add_argument("--split-csv", help="CSV for --split csv (default: DATA/splits.csv)")
    p.add_argument("--split-column", help=f"CSV column with train/val/test (default {d.split_column})")
    p.add_argument("--max-images", type=int, help="use a seeded pick of N dataset images before splitting")
    p.add_argument("--max-train-images", type=int, help="cap the training images (seeded pick)")
    p.add_argument("--epochs", type=int, help=f"default {d.epochs} (the paper's)")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, help=f"initial learning rate (default {d.lr})")
    p.add_argument("--min-lr", type=float, help=f"cosine floor (default {d.min_lr})")
    p.add_argument("--size", type=int, help=f"training size (default {d.size})")
    p.add_argument("--loss", choices=["bce_dice", "dice", "edge", "joint"], help=f"default {d.loss}")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument("--in-channels", type=int, choices=[1, 3], help="default: from the first image")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default 0)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--amp-dtype", choices=["auto", "bfloat16", "float16"],
                   help="autocast dtype on CUDA (default auto: bfloat16 where supported)")  # fmt: skip
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster on CPU)")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--threshold-masks", action="store_true", help="binarise masks with values other than 0/1/255")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor override, repeatable")
    p.add_argument("--loss-arg", action="append", metavar="KEY=VALUE", help="loss argument, e.g. edge_weight=0.5")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config key, repeatable")
    p.add_argument("--out", help="run folder (default runs/MODEL-YYYYmmdd-HHMMSS)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    p.add_argument("--evaluate", action="store_true", help="evaluate the best checkpoint on the test part after")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = parse_kv(args.set, "--set")
    flags = {
        "model": args.model, "data": args.data, "split": args.split, "test_fraction": args.test_fraction,
        "val_fraction": args.val_fraction, "folds": args.folds, "fold": args.fold, "split_csv": args.split_csv,
        "split_column": args.split_column, "max_images": args.max_images,
        "max_train_images": args.max_train_images, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "min_lr": args.min_lr, "size": args.size, "loss": args.loss,
        "seed": args.seed, "in_channels": args.in_channels, "device": args.device, "num_workers": args.num_workers,
    }  # fmt: skip
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if args.no_amp:
        overrides["amp"] = False
    if args.amp_dtype:
        overrides["amp_dtype"] = args.amp_dtype
    if args.threshold_masks:
        overrides["threshold_masks"] = True
    if args.channels_last:
        overrides["channels_last"] = True
    base = load_config(args.config) if args.config else TrainConfig()
    if args.model_arg:
        overrides["model_args"] = {**base.model_args, **parse_kv(args.model_arg, "--model-arg")}
    if args.loss_arg:
        overrides["loss_args"] = {**base.loss_args, **parse_kv(args.loss_arg, "--loss-arg")}
    if args.no_augment:
        overrides["augment"] = {**base.augment, "enabled": False}
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from scunext.engine.trainer import train

    if args.resume:
        where = ("device", "data", "num_workers")  # may change on resume (another machine), recorded in run.json
        keep = ("resume", "func", "command", "verbose", "no_progress", "evaluate", *where)
        given = [k for k, v in vars(args).items() if k not in keep and v not in (None, False)]
        if given:
            raise ValueError(f"--resume continues the run with its saved config; drop {', '.join(given)} "
                             "(only --device, --data and --num-workers may change)")  # fmt: skip
        result = train(None, args.resume, resume=True, show_progress=not args.no_progress,
                       resume_overrides={k: getattr(args, k, None) for k in where})  # fmt: skip
    else:
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
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
