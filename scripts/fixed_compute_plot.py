"""Dice reached versus CPU training minutes: one curve per run folder (validation Dice after each epoch, against
the cumulative training seconds in its log.csv), plus the held-out test Dice of its best checkpoint at the end.

    python scripts/fixed_compute_plot.py RUN_DIR [RUN_DIR ...] --out docs/images/fixed-compute-lungs.png

Each RUN_DIR must have been trained and evaluated (``scunext train ... --evaluate``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scunext.runs import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="Dice reached vs CPU training minutes (2 cores)")
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    print("| model | epochs | CPU training min | best val Dice % | test Dice % (per-image mean ± sd) |")
    print("|---|---:|---:|---:|---:|")
    for run in args.runs:
        cfg = RunDir(run).load_config()
        rows = RunDir(run).read_log()
        t, minutes, dice = 0.0, [], []
        for r in rows:
            t += float(r["epoch_seconds"])
            if r["val_dice"]:
                minutes.append(t / 60)
                dice.append(100 * float(r["val_dice"]))
        m = json.loads((run / "eval" / "test" / "metrics.json").read_text())["dice"]
        (line,) = ax.plot(minutes, dice, marker="o", ms=3, label=f"{cfg.model} ({cfg.epochs} ep)")
        ax.plot([minutes[-1]], [100 * m["per_image_mean"]], marker="*", ms=12, color=line.get_color())
        print(f"| `{cfg.model}` | {cfg.epochs} | {t / 60:.1f} | {max(dice):.2f} | "
              f"{100 * m['per_image_mean']:.2f} ± {100 * m['per_image_std']:.2f} |")  # fmt: skip
    ax.set_xlabel("training minutes (wall clock, 2 CPU threads)")
    ax.set_ylabel("Dice % (circles: validation; star: test)")
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
