"""The paper's tables as resumable experiments: every (configuration, split) is its own run folder, finished runs
are skipped, interrupted ones resumed, and every number in the tables is read back from a run folder.

Table 1: U-Net, ResUNet++, UNeXt-S (the paper's "UNeXt" row) and SC-UNeXt on N random 80/20 splits (or a CSV split),
each scored on its held-out part. Table 2: the ablation, 8 configurations x k folds on a seeded subset of images.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig, apply_overrides
from scunext.engine.evaluate import evaluate_run
from scunext.engine.trainer import train
from scunext.models import create_model
from scunext.profiling import count_macs, count_params
from scunext.runs import RunDir

__all__ = ["PlannedRun", "table1_plan", "table2_plan", "run_plan", "parse_shard", "summarize_table1",
           "summarize_table2", "TABLE1_MODELS", "TABLE2_CONFIGS", "PAPER_TABLE1", "PAPER_TABLE2"]  # fmt: skip

log = logging.getLogger(__name__)

TABLE1_MODELS = ("unet", "resunetpp", "unext_s", "sc_unext")

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

#: The paper's Table 1 (ISIC 2018): Dice %, IoU % as printed.
PAPER_TABLE1 = {"unet": (84.84, 76.37), "resunetpp": (85.73, 77.12), "unext_s": (86.64, 78.71),
                "sc_unext": (87.12, 79.13)}  # fmt: skip
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


@dataclass
class PlannedRun:
    """One training run of an experiment: ``row`` (table row), ``column`` (split/seed/fold) and its config."""

    row: str
    column: str
    folder: str
    cfg: TrainConfig


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def table1_plan(base: TrainConfig, seeds: int = 3, models: tuple[str, ...] = TABLE1_MODELS) -> list[PlannedRun]:
    """Every model on ``seeds`` random 80/20 splits (seed = split index), or once per model for a CSV split."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    for m in models:
        create_model(m)  # unknown names fail here, listing the valid ones
    seed_list = [0] if base.split == "csv" else list(range(seeds))
    plan = []
    for seed in seed_list:
        column = "official" if base.split == "csv" else f"seed {seed}"
        for m in models:
            cfg = apply_overrides(base, {"model": m, "seed": seed, "model_args": {}}).validate()
            plan.append(PlannedRun(m, column, f"{m}-{_slug(column)}", cfg))
    return plan


def table2_plan(base: TrainConfig, folds: int = 5) -> list[PlannedRun]:
    """The 8 ablation configurations x ``folds`` folds of ``base.max_images`` seeded images (seed ``base.seed``)."""
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    plan = []
    for k in range(folds):
        for row, (model, args, loss) in TABLE2_CONFIGS.items():
            cfg = apply_overrides(base, {"model": model, "model_args": args, "loss": loss, "split": "kfold",
                                         "folds": folds, "fold": k}).validate()  # fmt: skip
            plan.append(PlannedRun(row, f"fold {k + 1}", f"{_slug(row)}-fold{k + 1}", cfg))
    return plan


def _fmt_s(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1-based) -> ``(I, N)``; a clear ValueError otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def run_plan(
    plan: list[PlannedRun],
    out_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    show_bars: bool = False,
    device: str = "cpu",
    shard: tuple[int, int] | None = None,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Train and evaluate every planned run not yet done; returns one result dict per run (read from its folder).

    A run counts as done when ``run.json`` says finished and ``eval/test/metrics.json`` exists; an interrupted run
    is resumed from its last epoch; a run folder that failed (e.g. NaN) is reported and skipped. ``device`` is where
    the held-out part is scored. ``shard=(I, N)`` runs only every N-th planned run starting at the I-th, so N
    processes (or machines sharing the folder) can work on one experiment; each run folder has one owner.
    ``report_only`` trains nothing and returns what the run folders hold so far (unfinished runs count as missing).
    """
    say = progress or (lambda m: log.info("%s", m))
    runs_dir = out_dir / "runs"
    if not report_only:
        runs_dir.mkdir(parents=True, exist_ok=True)
    durations: list[float] = []
    mine = set(range(shard[0] - 1, len(plan), shard[1])) if shard else set(range(len(plan)))
    for i, pr in enumerate(plan, 1):
        if i - 1 not in mine:
            continue
        rd = runs_dir / pr.folder
        run = RunDir(rd)
        status = run.status()
        done = status == "finished" and (run.eval_dir("test") / "metrics.json").is_file()
        todo = sum(1 for j in mine if j >= i - 1)
        eta = f", ETA {_fmt_s(statistics.mean(durations) * todo)}" if durations else ""
        if done:
            say(f"[{i}/{len(plan)}] {pr.row} / {pr.column}: done, skipped")
            continue
        if status == "failed":
            say(f"[{i}/{len(plan)}] {pr.row} / {pr.column}: failed earlier ({run.status_file}), skipped")
            continue
        if report_only:
            say(f"[{i}/{len(plan)}] {pr.row} / {pr.column}: not finished ({status}), left out of the tables")
            continue
        say(f"[{i}/{len(plan)}] {pr.row} / {pr.column}: {'resuming' if status == 'running' else 'training'}{eta}")
        t0 = time.perf_counter()
        if status == "running" and run.epochs_done() > 0:
            train(None, rd, resume=True, show_progress=show_bars)
        elif status != "finished":
            if rd.exists():  # started but no finished epoch: start again
                import shutil

                shutil.rmtree(rd)
            train(pr.cfg, rd, show_progress=show_bars)
        evaluate_run(rd, subset="test", hd95=False, show_progress=show_bars, device=device)
        durations.append(time.perf_counter() - t0)
    return [collect(pr, runs_dir / pr.folder) for pr in plan]


def collect(pr: PlannedRun, rd: Path) -> dict[str, Any]:
    """The numbers of one run, read from its folder (``None`` where it is not finished)."""
    res: dict[str, Any] = {"row": pr.row, "column": pr.column, "run": str(rd), "dice": None, "iou": None,
                           "train_seconds": None, "epochs": pr.cfg.epochs}  # fmt: skip
    run = RunDir(rd)
    metrics = run.eval_dir("test") / "metrics.json"
    if metrics.is_file() and run.status() == "finished":
        m = json.loads(metrics.read_text())
        status = run.read_status()
        res.update(dice=m["dice"]["per_image_mean"], iou=m["iou"]["per_image_mean"], n_test=m["n_images"],
                   dice_pooled=m["dice"]["pooled"], train_seconds=status.get("train_seconds"))  # fmt: skip
    return res


def _run_in_channels(results: list[dict[str, Any]]) -> int:
    """Input channels the runs used (decided from the data when the config said 0 = auto)."""
    for r in results:
        run = RunDir(r["run"])
        if run.config_file.is_file():
            return run.load_config().in_channels
    return 3


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _bar_plot(path: Path, labels: list[str], means: list[float], sds: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 3.5))
    ax.bar(range(len(labels)), [100 * m for m in means], yerr=[100 * s for s in sds], capsize=4, color="#4a7ab5")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Dice % (per-image mean, held-out part)")
    lo = min(100 * (m - s) for m, s in zip(means, sds)) if means else 0
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize_table1(results: list[dict[str, Any]], out_dir: Path, base: TrainConfig) -> str:
    """Write ``table1.md``, ``table1.csv``, ``table1_paired.csv`` and ``table1.png``; returns the Markdown."""
    rows = list(dict.fromkeys(r["row"] for r in results))
    columns = list(dict.fromkeys(r["column"] for r in results))
    by = {(r["row"], r["column"]): r for r in results}
    in_ch = base.in_channels or _run_in_channels(results)
    csv_rows, md = [], []
    md.append(f"Data: `{base.data}`; split: {base.split}; epochs: {base.epochs}; size {base.size}; lr {base.lr}; "
              f"batch {base.batch_size}; max_train_images {base.max_train_images or 'all'}.\n")  # fmt: skip
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
        dm, ds = _mean_sd(dices)
        im, isd = _mean_sd(ious)
        var = statistics.variance(dices) if len(dices) > 1 else None
        paper = PAPER_TABLE1.get(row)
        var_s = "–" if var is None else f"{100 * var:.2f}%"
        mins = "–" if not secs else f"{statistics.mean(secs) / 60:.1f}"
        paper_s = "–" if not paper else f"{paper[0]:.2f} / {paper[1]:.2f}"
        md.append(f"| `{row}` | {params:,} | {gmacs:.3f} | {_pct(dm)} ± {_pct(ds)} | {var_s} | "
                  f"{_pct(im)} ± {_pct(isd)} | {mins} | {paper_s} | {len(dices)}/{len(columns)} |")  # fmt: skip
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
            pm, psd = _mean_sd(diffs)
            md.append("")
            md.append(f"Paired difference SC-UNeXt − UNeXt-S (Dice points, same split): "
                      f"{', '.join(f'{100 * d:+.2f}' for d in diffs)}; mean {100 * pm:+.2f}, "
                      f"sd {_pct(psd)} over {len(diffs)} split(s).")  # fmt: skip
    _write_csv(out_dir / "table1.csv", csv_rows)
    _write_csv(out_dir / "table1_paired.csv", paired)
    text = "\n".join(md) + "\n"
    (out_dir / "table1.md").write_text(text)
    if any(means):
        _bar_plot(out_dir / "table1.png", rows, means, sds, f"Table 1 on {Path(base.data).name or 'sample'}")
    return text


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
        m, s = _mean_sd(vals)
        var = statistics.variance(vals) if len(vals) > 1 else None
        paper = PAPER_TABLE2.get(row)
        md.append(f"| {row} | " + " | ".join(_pct(v) for v in d) + f" | {_pct(m)} | "
                  f"{'–' if var is None else f'{100 * var:.2f}%'} | {_pct(s)} | "
                  f"{'–' if not paper else f'{paper[1]:.2f} / {paper[2]:.2f}%'} |")  # fmt: skip
        means.append(m or 0.0)
        sds.append(s or 0.0)
        for c, v in zip(columns, d):
            csv_rows.append({"configuration": row, "fold": c, "dice": v, "run": by.get((row, c), {}).get("run")})
    _write_csv(out_dir / "table2.csv", csv_rows)
    text = "\n".join(md) + "\n"
    (out_dir / "table2.md").write_text(text)
    if any(means):
        _bar_plot(out_dir / "table2.png", rows, means, sds, "Table 2 (ablation), Dice per configuration")
    return text


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def check_experiment_record(out_dir: Path, record: dict[str, Any]) -> None:
    """Store the experiment's settings in ``experiment.json``; refuse to continue an experiment with others."""
    path = out_dir / "experiment.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if isinstance(old.get("base_config"), dict):  # settings added to TrainConfig since: their defaults
            old["base_config"] = {**TrainConfig().to_dict(), **old["base_config"]}
        if old != record:
            changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise ValueError(f"{out_dir} holds an experiment with other settings ({', '.join(changed)}); "
                             "use another --out or the same flags")  # fmt: skip
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
