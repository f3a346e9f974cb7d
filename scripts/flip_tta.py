"""How much would flip test-time augmentation (the mean of the logits of an image and of its horizontal mirror)
change a model's Dice? A measurement for a possible predict option, not a product feature.

    python scripts/flip_tta.py (RUN_DIR | NAME) [--data DIR] [--parts val,test]

For each part of the run's split: per-image Dice (native resolution, as ``scunext evaluate``) without and with the
flip average, the paired mean difference, images better/worse and the Wilcoxon p-value. The flipped pass is the one
the quality score already runs (scunext.deploy.quality), so the option would cost nothing extra when the score is on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from scunext.data import SegmentationDataset, discover_pairs, select_pairs
from scunext.deploy.predictor import Predictor
from scunext.metrics import confusion_counts, dice_score
from scunext.runs import RunDir, data_root_of
from scunext.weights import list_weights, weights_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--data")
    ap.add_argument("--parts", default="val,test")
    args = ap.parse_args()
    run = weights_dir(args.run) if args.run in list_weights() else Path(args.run)
    pred = Predictor.from_run(run)
    rd = RunDir(run)
    root = Path(args.data) if args.data else data_root_of(rd.load_config())
    split, pairs = rd.load_split(), discover_pairs(root)
    print(f"{args.run}: {pred.name}, intensity {pred.intensity}")
    print("| part | images | Dice % plain | Dice % flip-averaged | paired difference (points) | better / worse "
          "| Wilcoxon p |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for part in args.parts.split(","):
        sel = select_pairs(pairs, getattr(split, part))
        reader = SegmentationDataset(sel, in_channels=pred.in_channels, size=None)
        plain, tta = [], []
        for i in range(len(sel)):
            image, mask = reader.load(i)
            image = image[..., 0] if image.shape[2] == 1 else image
            x = pred.prepare(image)[None]
            lg = pred.logits(x)[0]
            lg_f = pred.logits(x.flip(-1)).flip(-1)[0]
            for store, logits in ((plain, lg), (tta, (lg + lg_f) / 2)):
                m = pred.mask_from_logits(logits, mask.shape[:2])
                counts = confusion_counts(m[None], (mask > 0)[None])
                store.append(float(dice_score(counts, reduction="per_image")[0]))
        a, b = np.array(plain), np.array(tta)
        d = b - a
        p = wilcoxon(d).pvalue if np.any(d != 0) else float("nan")
        print(f"| {part} | {len(d)} | {100 * a.mean():.2f} | {100 * b.mean():.2f} | {100 * d.mean():+.2f} | "
              f"{int((d > 0).sum())} / {int((d < 0).sum())} | {p:.2g} |")


if __name__ == "__main__":
    main()
