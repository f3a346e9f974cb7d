"""Side-by-side Markdown tables from several ``scunext robustness`` reports (the tables of docs/robustness.md).

    python scripts/robustness_tables.py lungs=OUT/lungs lungs-unext_s=OUT/lungs-unext_s [--group all]

Prints, per shift and severity, Dice % (per-image mean) and in brackets the paired drop against clean, one column
per report; then the quality-score lines (AUROC for Dice < 0.90, recall of Dice < 0.50 at the run's threshold,
flagged share of good predictions) for the clean and the stressed predictions, per group of the report's
``--group-pattern`` (from per_image.csv) when it has groups.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from scunext.deploy.quality import auroc


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def _pct(v: str | float | None) -> str:
    return "-" if v in ("", None) else f"{100 * float(v):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", metavar="NAME=DIR")
    ap.add_argument("--group", default="all", help="summary group to show (default all)")
    args = ap.parse_args()
    reports = [(r.split("=", 1)[0], Path(r.split("=", 1)[1])) for r in args.reports]
    tables = {name: {(r["shift"], r["severity"]): r for r in _rows(d) if r["group"] == args.group}
              for name, d in reports}  # fmt: skip
    keys: list[tuple[str, str]] = []
    for t in tables.values():
        keys += [k for k in t if k not in keys]
    print("| shift | severity | parameter | " + " | ".join(f"`{n}` Dice % (drop)" for n, _ in reports) + " |")
    print("|---|---:|---:|" + "---:|" * len(reports))
    for k in keys:
        par = next((t[k]["parameter"] for t in tables.values() if k in t), "")
        cells = []
        for name, _ in reports:
            r = tables[name].get(k)
            if r is None:
                cells.append("n/a")
            elif k[0] == "clean":
                cells.append(f"**{_pct(r['dice_mean'])}**")
            else:
                cells.append(f"{_pct(r['dice_mean'])} ({_pct(r['drop_vs_clean'])})")
        print(f"| {k[0]} | {k[1]} | {par} | " + " | ".join(cells) + " |")
    print()
    print("| report | predictions | n | Dice < 0.90 | Dice < 0.50 | AUROC (Dice < 0.90) | recall Dice < 0.50 | "
          "recall Dice < 0.90 | flagged of Dice >= 0.90 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in reports:
        rep = json.loads((d / "robustness.json").read_text())
        if not rep.get("quality"):
            continue
        with (d / "per_image.csv").open() as f:
            rows = list(csv.DictReader(f))
        groups = sorted({r["group"] for r in rows})
        for g in (["all"] + groups) if len(groups) > 1 else ["all"]:
            for part in ("clean", "stressed"):
                sel = [r for r in rows
                       if (g == "all" or r["group"] == g) and (r["shift"] == "clean") == (part == "clean")]
                if not sel:
                    continue
                dice = np.array([float(r["dice"]) for r in sel])
                score = np.array([float(r["score"]) for r in sel])
                flag = np.array([r["review"] == "True" for r in sel])
                auc = auroc(score, dice < 0.9)
                rec50 = flag[dice < 0.5].mean() if (dice < 0.5).any() else None
                rec90 = flag[dice < 0.9].mean() if (dice < 0.9).any() else None
                good = flag[dice >= 0.9].mean() if (dice >= 0.9).any() else None
                label = f"`{name}`" + (f" {g}" if g != "all" else "")
                print(f"| {label} (threshold {rep['quality_threshold']:.3f}) | {part} | {len(sel)} | "
                      f"{int((dice < 0.9).sum())} | {int((dice < 0.5).sum())} | "
                      f"{'-' if np.isnan(auc) else f'{auc:.3f}'} | {_pct(rec50)} | {_pct(rec90)} | {_pct(good)} |")


if __name__ == "__main__":
    main()
