"""The paper's Table 2: the ablation, 8 configurations x k folds on a seeded subset of images."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig, apply_overrides
from scunext.experiments.plan import PlannedRun, slug
from scunext.experiments.report import bar_plot, mean_sd, pct, write_csv

__all__ = ["TABLE2_CONFIGS", "PAPER_TABLE2", "table2_plan", "summarize_table2"]

#: paper term -> (model, model_args, loss). "skip" = SC skip with its CBAM attention; "fuse" = PFM;
#: "edge loss" = the joint loss (bce_dice + edge). See docs/architecture.md.
_OFF = {"cbam": False, "sc_skip": False, "pfm": False}
TABLE2_CONFIGS: dict[str, tuple[str, dict[str, Any], str]] = {
    "UNeXt": ("sc_unext", dict(_OFF), "bce_dice"),
    "SC-UNeXt (edge loss)": ("sc_unext", dict(_OFF), "joint"),
    "SC-UNeXt (skip)": ("sc_unext", {**_OFF, "cbam": True, "sc_skip": True}, "bce_dice"),
    "SC-UNeXt (fuse)": ("sc_unext", {**_OFF, "pfm": True}, "bce_dice"),
    "SC-UNeXt (edge loss+skip)": ("sc_unext", {**_OFF, "cbam": True, "sc_skip": True}, "joint"),
    "SC-UNeXt (edge loss+fuse)": ("sc_unext", {**_OFF, "pfm": True}, "joint"),
    "SC-UNeXt (skip+fuse)": ("sc_unext", {"cbam": True, "sc_skip": True, "pfm": True}, "bce_dice"),
    "SC-UNeXt (edge loss+skip+fuse)": ("sc_unext", {"cbam": True, "sc_skip": True, "pfm": True}, "joint"),
}

#: The paper's Table 2: per-fold Dice %, then its printed mean and variance (%).
PAPER_TABLE2 = {
    "UNeXt": ([82.61, 84.66, 91.47, 87.61, 83.08], 85.89, 0.14),
    "SC-UNeXt (edge loss)": ([85.10, 85.53, 88.51, 86.69, 86.84], 86.14, 0.03),
    "SC-UNeXt (skip)": ([85.73, 85.90, 90.68, 82.46, 83.75], 86.53, 0.13),
    "SC-UNeXt (fuse)": ([87.17, 85.07, 90.58, 85.59, 84.92], 86.17, 0.10),
    "SC-UNeXt (edge loss+skip)": ([85.90, 87.98, 90.22, 85.79, 89.14], 86.90, 0.05),
    "SC-UNeXt (edge loss+fuse)": ([87.98, 80.14, 90.50, 86.48, 88.03], 86.98, 0.20),
    "SC-UNeXt (skip+fuse)": ([82.90, 88.62, 88.60, 84.90, 87.30], 85.90, 0.07),
    "SC-UNeXt (edge loss+skip+fuse)": ([85.89, 88.11, 89.02, 86.11, 87.22], 87.29, 0.08),
}


def table2_plan(base: TrainConfig, folds: int = 5) -> list[PlannedRun]:
    """The 8 ablation configurations x ``folds`` folds of ``base.max_images`` seeded images (seed ``base.seed``)."""
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    plan = []
    for k in range(folds):
        for row, (model, args, loss) in TABLE2_CONFIGS.items():
            cfg = apply_overrides(base, {"model": model, "model_args": args, "loss": loss, "split": "kfold",
                                         "folds": folds, "fold": k}).validate()  # fmt: skip
            plan.append(PlannedRun(row, f"fold {k + 1}", f"{slug(row)}-fold{k + 1}", cfg))
    return plan


def summarize_table2(results: list[dict[str, Any]], out_dir: Path, base: TrainConfig) -> str:
    """Write ``table2.md``, ``table2.csv`` and ``table2.png``; returns the Markdown."""
    rows = list(dict.fromkeys(r["row"] for r in results))
    columns = list(dict.fromkeys(r["column"] for r in results))
    by = {(r["row"], r["column"]): r for r in results}
    md = [f"Data: `{base.data}`, a seeded pick of {base.max_images or 'all'} images (seed {base.seed}), "
          f"{len(columns)}-fold cross-validation (the held-out fold is scored; model selection on a validation part "
          f"carved from the other folds); epochs {base.epochs}; size {base.size}; lr {base.lr}.\n",
          "| configuration | " + " | ".join(columns) + " | mean | variance (paper style) | sd | paper mean / var |",
          "|---|" + "---:|" * (len(columns) + 4)]  # fmt: skip
    csv_rows, means, sds = [], [], []
    for row in rows:
        d = [by.get((row, c), {}).get("dice") for c in columns]
        vals = [v for v in d if v is not None]
        m, s = mean_sd(vals)
        var = statistics.variance(vals) if len(vals) > 1 else None
        paper = PAPER_TABLE2.get(row)
        md.append(f"| {row} | " + " | ".join(pct(v) for v in d) + f" | {pct(m)} | "
                  f"{'–' if var is None else f'{100 * var:.2f}%'} | {pct(s)} | "
                  f"{'–' if not paper else f'{paper[1]:.2f} / {paper[2]:.2f}%'} |")  # fmt: skip
        means.append(m or 0.0)
        sds.append(s or 0.0)
        for c, v in zip(columns, d):
            csv_rows.append({"configuration": row, "fold": c, "dice": v, "run": by.get((row, c), {}).get("run")})
    write_csv(out_dir / "table2.csv", csv_rows)
    text = "\n".join(md) + "\n"
    (out_dir / "table2.md").write_text(text)
    if any(means):
        bar_plot(out_dir / "table2.png", rows, means, sds, "Table 2 (ablation), Dice per configuration")
    return text
