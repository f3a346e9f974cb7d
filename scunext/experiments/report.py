"""Shared pieces of the experiment reports: number formats, mean ± sd, CSV writing, the budget line, bar plots."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig
from scunext.data.transforms import AugmentConfig
from scunext.runs.durable import atomic_write_text

__all__ = ["mean_sd", "pct", "write_csv", "bar_plot", "run_in_channels", "budget_line", "PROTOCOL_KEYS",
           "protocol_differences", "deviation_notes", "per_image_dice"]

#: the training settings that make a table's budget: a run whose saved config differs in one of them is marked
PROTOCOL_KEYS = ("epochs", "lr", "min_lr", "batch_size", "size", "loss", "loss_args", "weight_decay", "beta1",
                 "beta2", "augment", "channels_last", "intensity", "intensity_before_augment", "max_train_images",
                 "cpu_amp")  # fmt: skip


def _augment_text(base: TrainConfig) -> str:
    return "default" if base.augment == AugmentConfig() else str(base.augment.to_dict())


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample sd (``None`` where undefined)."""
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage, ``–`` for missing."""
    return "–" if x is None else f"{100 * x:.{digits}f}"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows as CSV (columns of the first row), replacing ``path`` atomically (a crash leaves the old table)."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def run_in_channels(results: list[dict[str, Any]], default: int = 3) -> int:
    """Input channels the runs used (decided from the data when the config said 0 = auto)."""
    for r in results:
        ch = (r.get("config") or {}).get("in_channels")
        if ch:
            return int(ch)
    return default


def budget_line(base: TrainConfig, results: list[dict[str, Any]] | None = None) -> str:
    """The training budget every table states: epochs, optimiser, size, batch, caps, and where the runs trained."""
    devices = sorted({str(r["device"]) + (f" ({r['host']})" if r.get("host") else "")
                      for r in results or [] if r.get("device")})  # fmt: skip
    where = f"; trained on: {'; '.join(devices)}" if devices else ""
    return (f"Budget: {base.epochs} epochs, Adam lr {base.lr:g} cosine to {base.min_lr:g}, batch {base.batch_size}, "
            f"size {base.size}, loss {base.loss}, augmentation {_augment_text(base)}, "
            f"channels_last {base.channels_last}, max_train_images {base.max_train_images or 'all'}"
            f"{', bfloat16 autocast on the CPU' if base.cpu_amp else ''}{where}.")  # fmt: skip


def protocol_differences(base: TrainConfig, result: dict[str, Any]) -> list[str]:
    """``["key=value", ...]`` where a scored run's saved config differs from its planned config (``base`` when the
    result does not carry one) in one of the :data:`PROTOCOL_KEYS` (e.g. a record trained elsewhere with another
    setting; fields added since an old run take their defaults, as when it is loaded); empty for a run that follows
    its plan or has no config or score."""
    if not result.get("config") or result.get("dice") is None:
        return []
    planned = result.get("planned")  # the planned run's own config where known (a row's loss is its configuration)
    got = TrainConfig.from_dict(result["config"]).to_dict()
    want = (planned if isinstance(planned, TrainConfig) else base).to_dict()
    return [f"{k}={got[k]}" for k in PROTOCOL_KEYS if got[k] != want[k]]


def per_image_dice(result: dict[str, Any], part: str = "test") -> dict[str, float]:
    """``{image id: Dice}`` of a scored run's ``part``; NaN for the images whose Dice is undefined (both masks empty
    under a NaN rule: no ``dice`` in their row), which the paired tests then leave out of both sides
    (:func:`scunext.metrics.paired.pair_scores`: the ids still show that both runs scored the same images)."""
    return {i: math.nan if v.get("dice") is None else v["dice"] for i, v in result["per_image"].get(part, {}).items()}


def deviation_notes(base: TrainConfig, results: list[dict[str, Any]]) -> list[str]:
    """One ``‡`` line per scored run whose saved config left the budget line (:func:`protocol_differences`): a
    table built from records trained elsewhere (``--report-only --records``) says so under its budget line instead
    of stating a budget some of its runs did not have (the leaderboard marks its rows the same way)."""
    notes = []
    for r in results:
        diff = protocol_differences(base, r)
        if diff:
            notes.append(f"‡ `{r['row']}`, {r['column']}: trained with {', '.join(diff)}, not as the budget line says "
                         "(docs/experiments.md).")  # fmt: skip
    return notes


def bar_plot(path: Path, labels: list[str], means: list[float], sds: list[float], title: str) -> None:
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
