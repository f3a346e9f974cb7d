"""The paper's Table 2: the ablation, 8 configurations x k folds on a seeded subset of images."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from scunext.config import TrainConfig, apply_overrides
from scunext.experiments.plan import PlannedRun, check_count, slug
from scunext.experiments.report import bar_plot, budget_line, deviation_notes, mean_sd, pct, per_image_dice, write_csv
from scunext.metrics.paired import PairedResult, paired_comparison, wilcoxon_p
from scunext.runs.durable import atomic_write_text

__all__ = ["TABLE2_CONFIGS", "PAPER_TABLE2", "COMPONENTS", "table2_plan", "summarize_table2", "edge_loss_line",
           "components_of", "component_effects", "paired_markdown"]  # fmt: skip

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


#: the paper's three ablation terms
COMPONENTS = ("edge loss", "skip", "fuse")


def components_of(config: str) -> frozenset[str]:
    """The paper terms switched on in a Table 2 configuration name (``UNeXt`` = none)."""
    if "(" not in config:
        return frozenset()
    return frozenset(t.strip() for t in config[config.index("(") + 1 : config.rindex(")")].split("+"))


def component_effects(
    scores: dict[str, dict[str, dict[str, float]]], *, n_boot: int = 10_000
) -> list[tuple[str, PairedResult]]:
    """The effect of each component: every pair of configurations that differ only by it, compared image by image.

    ``scores[config][group] = {image id: Dice}`` (a group is a fold or a seed; both configurations of a pair must have
    been scored on the same images in that group). The groups of a component are all (pair, group) combinations
    present in both, each weighing the same.
    """
    by_set = {components_of(c): c for c in scores}
    out = []
    for comp in COMPONENTS:
        with_c, without_c = [], []
        for s, name in by_set.items():
            if comp in s or (s | {comp}) not in by_set:
                continue
            other = by_set[s | {comp}]
            for g in scores[name]:
                if g in scores[other]:
                    with_c.append(scores[other][g])
                    without_c.append(scores[name][g])
        if with_c:
            out.append((comp, paired_comparison(with_c, without_c, f"+{comp}", f"no {comp}", n_boot=n_boot)))
    return out


def paired_markdown(rows: list[tuple[str, PairedResult]], first: str, per_group: str | None = None) -> list[str]:
    """Markdown rows ``| first | Δ [CI] | p | n images (groups) | verdict |`` for labelled paired results; with
    ``per_group`` (e.g. ``"fold"``) also the group-level test: in how many groups the mean difference is positive,
    and the Wilcoxon p over the groups' mean differences."""
    extra = f" {per_group}s with Δ > 0 | Wilcoxon p over {per_group}s |" if per_group else ""
    md = [f"| {first} | Δ Dice [95 % CI] | Wilcoxon p | image pairs (groups) | verdict |{extra}",
          "|---|---:|---:|---:|---|" + ("---:|---:|" if per_group else "")]  # fmt: skip
    for label, r in rows:
        cells = ""
        if per_group:
            cells = (f" {sum(d > 0 for d in r.per_group)} of {len(r.per_group)} | "
                     f"{wilcoxon_p(np.array(r.per_group)):.3g} |")  # fmt: skip
        md.append(f"| {label} | {100 * r.mean_difference:+.2f} [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}] | "
                  f"{r.p_value:.3g} | {r.n_images} ({r.n_groups}) | {r.verdict} |{cells}")  # fmt: skip
    return md


def table2_plan(base: TrainConfig, folds: int = 5) -> list[PlannedRun]:
    """The 8 ablation configurations x ``folds`` folds of ``base.max_images`` seeded images (seed ``base.seed``)."""
    check_count(folds, "--folds", 2)
    plan = []
    for k in range(folds):
        for row, (model, args, loss) in TABLE2_CONFIGS.items():
            cfg = apply_overrides(base, {"model": model, "model_args": args, "loss": loss, "split": "kfold",
                                         "folds": folds, "fold": k}).validate()  # fmt: skip
            plan.append(PlannedRun(row, f"fold {k + 1}", f"{slug(row)}-fold{k + 1}", cfg))
    return plan


def edge_loss_line(base: TrainConfig) -> str:
    """The budget line names the base loss; the four edge-loss rows train with the joint loss instead."""
    import inspect

    from scunext.losses.compound import JointLoss

    default = inspect.signature(JointLoss).parameters["edge_weight"].default
    weight = base.loss_args.get("edge_weight", default)  # (the edge rows keep the base loss_args)
    return (f"The four rows with `edge loss` train with loss `joint` instead (BCE + Dice + {weight:g} x the edge "
            f"band BCE; the paper gives no weight), the others with the loss above.")


def summarize_table2(results: list[dict[str, Any]], out_dir: Path, base: TrainConfig, *, n_boot: int = 10_000) -> str:
    """Write ``table2.md``, ``table2.csv``, ``table2_paired.csv`` and ``table2.png``; returns the Markdown.

    Below the fold table: each configuration against UNeXt, image by image (folds are the groups), and the effect of
    each component over every pair of configurations that differ only by it (:func:`component_effects`).
    """
    rows = list(dict.fromkeys(r["row"] for r in results))
    columns = list(dict.fromkeys(r["column"] for r in results))
    by = {(r["row"], r["column"]): r for r in results}
    md = [f"Data: `{Path(base.data).name}`, a seeded pick of {base.max_images or 'all'} images (seed {base.seed}), "
          f"{len(columns)}-fold cross-validation (the held-out fold is scored; model selection on a validation part "
          f"carved from the other folds); epochs {base.epochs}; size {base.size}; lr {base.lr}.",
          budget_line(base, results), edge_loss_line(base), *deviation_notes(base, results), "",
          "| configuration | " + " | ".join(columns) + " | mean | variance (paper style) | sd | paper mean / var "
          "| runs |",
          "|---|" + "---:|" * (len(columns) + 5)]  # fmt: skip
    csv_rows, means, sds = [], [], []
    done = {row: sum(by.get((row, c), {}).get("dice") is not None for c in columns) for row in rows}
    for row in rows:
        d = [by.get((row, c), {}).get("dice") for c in columns]
        vals = [v for v in d if v is not None]
        m, s = mean_sd(vals)
        var = statistics.variance(vals) if len(vals) > 1 else None
        paper = PAPER_TABLE2.get(row)
        mark = "" if done[row] == len(columns) else " ‡"  # a mean over the folds it has, not all
        md.append(f"| {row} | " + " | ".join(pct(v) for v in d) + f" | {pct(m)}{mark if vals else ''} | "
                  f"{'–' if var is None else f'{100 * var:.2f}%'} | {pct(s)} | "
                  f"{'–' if not paper else f'{paper[1]:.2f} / {paper[2]:.2f}%'} | {done[row]}/{len(columns)} |")
        means.append(m or 0.0)
        sds.append(s or 0.0)
        for c, v in zip(columns, d):
            csv_rows.append({"configuration": row, "fold": c, "dice": v, "run": by.get((row, c), {}).get("run")})
    scores = {row: {c: per_image_dice(by[(row, c)])
                    for c in columns if by.get((row, c), {}).get("dice") is not None} for row in rows}  # fmt: skip
    paired: list[tuple[str, PairedResult]] = []
    if "UNeXt" in rows:
        for row in rows:
            common = [c for c in columns if c in scores[row] and c in scores["UNeXt"]]
            if row != "UNeXt" and common:
                r = paired_comparison([scores[row][c] for c in common], [scores["UNeXt"][c] for c in common], row,
                                      "UNeXt", n_boot=n_boot, group_names=common)  # fmt: skip
                paired.append((row, r))
    effects = component_effects(scores, n_boot=n_boot)
    if any(n < len(columns) for n in done.values()):
        md += ["", f"‡ {sum(done.values())} of {len(rows) * len(columns)} runs finished: a mean marked ‡ is over the "
               "folds its row has (runs column), and the comparisons below pair only the folds that both sides "
               "have (their groups column), so a verdict may rest on fewer folds than planned."]  # fmt: skip
    if paired:
        md += ["", "Each configuration against UNeXt, per image on the same held-out images (folds are the groups; "
               "the verdict names a winner only when the 95 % CI excludes 0 and p < 0.05):", ""]  # fmt: skip
        md += paired_markdown(paired, "configuration", per_group="fold")
    if effects:
        md += ["", "Per component: every pair of configurations that differ only by it (e.g. skip: UNeXt vs skip, "
               "edge loss vs edge loss+skip, ...), per image; the last two columns test the (pair, fold) means:",
               ""]  # fmt: skip
        md += paired_markdown(effects, "component", per_group="fold")
    if paired or effects:
        floor = 2 / 2 ** len(columns)  # the smallest exact two-sided signed-rank p over n groups
        md += ["", f"The verdicts are the per-image tests'. Per fold: the mean per-image difference of each fold "
               f"(table2_paired.csv); over the {len(columns)} folds of one configuration the Wilcoxon p cannot fall "
               f"below {floor:.3g} (exact, two-sided)" + (", so folds alone can never show a difference." if floor
                                                          >= 0.05 else ".")]  # fmt: skip
    write_csv(out_dir / "table2_paired.csv", [
        {"comparison": "vs UNeXt" if label in rows else "component", "label": label, "n_images": r.n_images,
         "groups": r.n_groups, "mean_difference": r.mean_difference, "ci_low": r.ci_low, "ci_high": r.ci_high,
         "wilcoxon_p": r.p_value, "per_group_differences": ";".join(f"{d:.6f}" for d in r.per_group),
         "verdict": r.verdict} for label, r in paired + effects])  # fmt: skip
    write_csv(out_dir / "table2.csv", csv_rows)
    text = "\n".join(md) + "\n"
    atomic_write_text(out_dir / "table2.md", text)
    if any(means):
        bar_plot(out_dir / "table2.png", rows, means, sds, "Table 2 (ablation), Dice per configuration")
    return text
