"""The paper's Table 1: U-Net, ResUNet++, UNeXt-S (the paper's "UNeXt" row) and SC-UNeXt on N random 80/20 splits
(or a CSV split), each scored on its held-out part."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig, apply_overrides
from scunext.experiments.plan import PlannedRun, check_count, slug
from scunext.experiments.report import (
    bar_plot,
    budget_line,
    deviation_notes,
    mean_sd,
    pct,
    per_image_dice,
    run_in_channels,
    write_csv,
)
from scunext.experiments.table2 import paired_markdown
from scunext.metrics.paired import PairedResult, paired_comparison
from scunext.models import create_model
from scunext.profiling import count_macs, count_params
from scunext.runs.durable import atomic_write_text

__all__ = ["TABLE1_MODELS", "PAPER_TABLE1", "table1_plan", "summarize_table1"]

TABLE1_MODELS = ("unet", "resunetpp", "unext_s", "sc_unext")

#: The paper's Table 1 (ISIC 2018): Dice %, IoU % as printed.
PAPER_TABLE1 = {"unet": (84.84, 76.37), "resunetpp": (85.73, 77.12), "unext_s": (86.64, 78.71),
                "sc_unext": (87.12, 79.13)}  # fmt: skip


def table1_plan(base: TrainConfig, seeds: int = 3, models: tuple[str, ...] = TABLE1_MODELS) -> list[PlannedRun]:
    """Every model on ``seeds`` random 80/20 splits (seed = split index), or once per model for a CSV split."""
    check_count(seeds, "--seeds", 1)
    for m in models:
        create_model(m)  # unknown names fail here, listing the valid ones
    seed_list = [0] if base.split == "csv" else list(range(seeds))
    plan = []
    for seed in seed_list:
        column = "official" if base.split == "csv" else f"seed {seed}"
        for m in models:
            cfg = apply_overrides(base, {"model": m, "seed": seed, "model_args": {}}).validate()
            plan.append(PlannedRun(m, column, f"{m}-{slug(column)}", cfg))
    return plan


def _per_image_tests(rows: list[str], columns: list[str], by: dict, n_boot: int) -> list[tuple[str, PairedResult]]:
    """Each model against SC-UNeXt on the splits both have, per image (the per-split means alone cannot say
    whether a gap of a tenth of a point is more than image sampling)."""
    out = []
    if "sc_unext" not in rows:
        return out
    for row in rows:
        common = [c for c in columns if row != "sc_unext" and by.get((row, c), {}).get("dice") is not None
                  and by.get(("sc_unext", c), {}).get("dice") is not None]  # fmt: skip
        if common:
            out.append((row, paired_comparison([per_image_dice(by[(row, c)]) for c in common],
                                               [per_image_dice(by[("sc_unext", c)]) for c in common], row, "sc_unext",
                                               n_boot=n_boot, group_names=common)))  # fmt: skip
    return out


def summarize_table1(results: list[dict[str, Any]], out_dir: Path, base: TrainConfig, *, n_boot: int = 10_000) -> str:
    """Write ``table1.md``, ``table1.csv``, ``table1_paired.csv`` (per split), ``table1_paired_images.csv`` (per
    image, each model against SC-UNeXt, the splits as groups) and ``table1.png``; returns the Markdown."""
    rows = list(dict.fromkeys(r["row"] for r in results))
    columns = list(dict.fromkeys(r["column"] for r in results))
    by = {(r["row"], r["column"]): r for r in results}
    in_ch = base.in_channels or run_in_channels(results)
    csv_rows, md = [], []
    md.append(f"Data: `{Path(base.data).name}`; split: {base.split}; epochs: {base.epochs}; size {base.size}; "
              f"lr {base.lr}; batch {base.batch_size}; max_train_images {base.max_train_images or 'all'}.")  # fmt: skip
    md.append(budget_line(base, results))
    md += [*deviation_notes(base, results), ""]
    md.append("| model | params | GMACs @256 | Dice % mean ± sd | Dice var (paper style) | IoU % mean ± sd | "
              "train min (mean) | paper Dice / IoU % (ISIC 2018) | runs |")  # fmt: skip
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    means, sds = [], []
    for row in rows:
        model = create_model(row, in_channels=in_ch)
        params, gmacs = count_params(model), count_macs(model, (1, in_ch, 256, 256)) / 1e9
        dices = [by[(row, c)]["dice"] for c in columns if by.get((row, c), {}).get("dice") is not None]
        ious = [by[(row, c)]["iou"] for c in columns if by.get((row, c), {}).get("iou") is not None]
        secs = [by[(row, c)]["train_seconds"] for c in columns if by.get((row, c), {}).get("train_seconds")]
        dm, ds = mean_sd(dices)
        im, isd = mean_sd(ious)
        var = statistics.variance(dices) if len(dices) > 1 else None
        paper = PAPER_TABLE1.get(row)
        var_s = "–" if var is None else f"{100 * var:.2f}%"
        mins = "–" if not secs else f"{statistics.mean(secs) / 60:.1f}"
        paper_s = "–" if not paper else f"{paper[0]:.2f} / {paper[1]:.2f}"
        md.append(f"| `{row}` | {params:,} | {gmacs:.3f} | {pct(dm)} ± {pct(ds)} | {var_s} | "
                  f"{pct(im)} ± {pct(isd)} | {mins} | {paper_s} | {len(dices)}/{len(columns)} |")  # fmt: skip
        means.append(dm or 0.0)
        sds.append(ds or 0.0)
        for c in columns:
            r = by.get((row, c), {})
            csv_rows.append({"model": row, "split": c, "params": params, "gmacs": round(gmacs, 4),
                             "dice": r.get("dice"), "iou": r.get("iou"), "train_seconds": r.get("train_seconds"),
                             "run": r.get("run")})  # fmt: skip
    paired = []
    if "sc_unext" in rows and "unext_s" in rows:
        for c in columns:
            a, b = by.get(("sc_unext", c), {}).get("dice"), by.get(("unext_s", c), {}).get("dice")
            if a is not None and b is not None:
                paired.append({"split": c, "sc_unext": a, "unext_s": b, "difference": a - b})
        if paired:
            diffs = [p["difference"] for p in paired]
            pm, psd = mean_sd(diffs)
            md.append("")
            md.append(f"Paired difference SC-UNeXt − UNeXt-S (Dice points, same split): "
                      f"{', '.join(f'{100 * d:+.2f}' for d in diffs)}; mean {100 * pm:+.2f}, "
                      f"sd {pct(psd)} over {len(diffs)} split(s).")  # fmt: skip
    per_image = _per_image_tests(rows, columns, by, n_boot)
    if per_image:
        md += ["", "Each model against SC-UNeXt, per image on the same test images (the splits are the groups; the "
               "verdict names a winner only when the 95 % CI excludes 0 and p < 0.05, docs/experiments.md):", ""]
        md += paired_markdown([(f"`{row}` − `sc_unext`", r) for row, r in per_image], "comparison")  # fmt: skip
    write_csv(out_dir / "table1.csv", csv_rows)
    write_csv(out_dir / "table1_paired.csv", paired)
    write_csv(out_dir / "table1_paired_images.csv", [
        {"model": row, "reference": "sc_unext", "n_images": r.n_images, "groups": r.n_groups,
         "mean_difference": r.mean_difference, "ci_low": r.ci_low, "ci_high": r.ci_high, "wilcoxon_p": r.p_value,
         "per_split_differences": ";".join(f"{d:.6f}" for d in r.per_group), "verdict": r.verdict}
        for row, r in per_image])  # fmt: skip
    text = "\n".join(md) + "\n"
    atomic_write_text(out_dir / "table1.md", text)
    if any(means):
        bar_plot(out_dir / "table1.png", rows, means, sds, f"Table 1 on {Path(base.data).name or 'sample'}")
    return text
