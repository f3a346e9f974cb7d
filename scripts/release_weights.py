"""Package a finished, evaluated run folder as released weights: ``scunext/assets/weights/NAME/``.

    python scripts/release_weights.py RUN_DIR NAME --dataset "ISIC 2017" --command "scunext ..." [--note TEXT]

Copies ``best.safetensors``/``best.json``, ``config.yaml`` and ``split.json`` and writes ``card.json`` from the
run's ``run.json`` and ``eval/test/metrics.json`` (nothing is typed in by hand except the dataset label, the
command, the note and ``--changes``). Replacing a release removes its ``quality.json`` (calibrated for the old
weights): run ``scunext calibrate --weights NAME --data DATA`` afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from scunext.profiling import count_params
from scunext.runs import RunDir
from scunext.weights import WEIGHTS_DIR

LICENCES = {
    "isic2017": "trained on ISIC 2017 Challenge data: non-commercial research use (the ISIC 2018 images among them "
    "are CC BY-NC 4.0); attribution and citations in scunext/assets/samples/isic2017/SOURCE.md",
    "chest-xray-lungs": "trained on the Montgomery + Shenzhen chest X-ray sets: research and non-commercial use "
    "only; attribution and citations in scunext/assets/samples/chest-xray-lungs/SOURCE.md",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("name")
    ap.add_argument("--dataset", required=True, help="dataset folder name, e.g. isic2017 or chest-xray-lungs")
    ap.add_argument("--command", required=True, help="the command(s) that trained the run")
    ap.add_argument("--note", default="", help="anything a user must know (e.g. where it was trained)")
    ap.add_argument("--changes", default="", help="what changed against the release this one replaces")
    args = ap.parse_args()
    rd = RunDir(args.run_dir)
    status = rd.read_status()
    if status.get("status") != "finished":
        raise SystemExit(f"{rd.path}: run not finished ({status.get('status')})")
    metrics = json.loads((rd.eval_dir("test") / "metrics.json").read_text())
    split = json.loads(rd.split_file.read_text())
    cfg = rd.load_config()
    model, meta = rd.load_model("best", cfg)
    out = WEIGHTS_DIR / args.name
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "quality.json"  # the review threshold of the weights being replaced: recalibrate the new ones
    if stale.is_file():
        stale.unlink()
        print(f"removed {stale}: run `scunext calibrate --weights {args.name} --data DATA` for the new weights")
    best = rd.checkpoint_stem("best")
    for src in (best.with_suffix(".safetensors"), best.with_suffix(".json"), rd.config_file, rd.split_file):
        shutil.copy2(src, out / src.name)
    weights = (out / "best.safetensors").read_bytes()
    keep = ("per_image_mean", "per_image_std", "pooled")
    card = {
        "name": args.name,
        "model": meta["model"],
        "model_args": meta["model_args"],
        "params": count_params(model),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "data": {"dataset": args.dataset, "licence": LICENCES.get(args.dataset, ""), "size": cfg.size,
                 "in_channels": cfg.in_channels, "intensity": cfg.intensity},  # fmt: skip
        "split": {"kind": cfg.split, "seed": cfg.seed, "column": cfg.split_column if cfg.split == "csv" else None,
                  **{k: len(split.get(k, [])) for k in ("train", "val", "test")}},  # fmt: skip
        "training": {"epochs": cfg.epochs, "best_epoch": meta.get("epoch"), "selected_on": "validation Dice",
                     "lr": cfg.lr, "min_lr": cfg.min_lr, "batch_size": cfg.batch_size, "loss": cfg.loss,
                     "augment": cfg.augment.to_dict(),
                     "train_seconds": status.get("train_seconds"), "device": status.get("device"),
                     "moves": status.get("moves", [])},  # fmt: skip
        "test_metrics": {
            "n_images": metrics["n_images"],
            "threshold": metrics["threshold"],
            "resolution": metrics["resolution"],
            **{m: {k: metrics[m][k] for k in keep} for m in ("dice", "iou", "precision", "recall")},
        },
        "command": args.command,
        "note": args.note,
    }
    if args.changes:
        card["changes"] = args.changes
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{out}: {card['model']}, test Dice {card['test_metrics']['dice']['per_image_mean']:.4f} "
          f"on {card['test_metrics']['n_images']} images, {len(weights) / 1e6:.2f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
