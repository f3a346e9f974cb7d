"""The README's overlays: the released weights on shipped sample images that each release did NOT train on.

    python scripts/readme_overlays.py [--out docs/images/released-overlays.png] [--per-release 4]

For each of ``--weights isic2017`` and ``--weights lungs`` it takes the first shipped sample images that are in the
release's test part (its split.json), predicts exactly as ``scunext predict --weights NAME`` does, and draws the
prediction (red) with the expert mask outlined (green); each caption gives the image id and its Dice.
"""

from __future__ import annotations

import argparse

from scunext.data import discover_pairs, read_image, read_mask, sample_dir
from scunext.deploy.predictor import Predictor
from scunext.metrics import confusion_counts, dice_score
from scunext.runs import RunDir
from scunext.visualize import overlay, panel
from scunext.weights import weights_card, weights_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/images/released-overlays.png")
    ap.add_argument("--per-release", type=int, default=4)
    ap.add_argument("--weights", default="isic2017,lungs")
    args = ap.parse_args()
    tiles, captions = [], []
    for name in args.weights.split(","):
        folder = weights_dir(name)
        test = set(RunDir(folder).load_split().test)
        pairs = [p for p in discover_pairs(sample_dir(weights_card(name)["data"]["dataset"])) if p.id in test]
        pred = Predictor.from_run(folder)
        for p in pairs[: args.per_release]:
            image, gt = read_image(p.image), read_mask(p.mask)
            mask = pred.predict([image])[0]
            dice = float(dice_score(confusion_counts(mask[None], gt[None]))[0])
            tiles.append(overlay(image, mask, gt))
            captions.append(f"{name}: {p.id} Dice {dice:.3f}")
            print(f"{name} {p.id}: Dice {dice:.4f}")
    panel(tiles, captions, columns=args.per_release, tile=240).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
