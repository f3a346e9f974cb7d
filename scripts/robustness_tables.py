"""Side-by-side Markdown tables from several ``scunext robustness`` reports (the tables of docs/robustness.md).

    python scripts/robustness_tables.py lungs=OUT/lungs lungs-unext_s=OUT/lungs-unext_s [--group all]

Prints, per shift and severity, Dice % (per-image mean) and in brackets the paired drop against clean, one column
per report; then the quality-score lines (AUROC for Dice < 0.90, recall of Dice < 0.50 at the run's threshold,
flagged share of good predictions) for the clean and the stressed predictions.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


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
        for part, q in (rep.get("quality") or {}).items():
            if part == "all":
                continue
            auc = q["auroc_dice_below_0.90"]
            print(f"| `{name}` (threshold {rep['quality_threshold']:.3f}) | {part} | {q['n']} | "
                  f"{q['n_dice_below_0.90']} | {q['n_dice_below_0.50']} | {'-' if auc is None else f'{auc:.3f}'} | "
                  f"{_pct(q['recall_dice_below_0.50'])} | {_pct(q['recall_dice_below_0.90'])} | "
                  f"{_pct(q['flagged_share_dice_ge_0.90'])} |")


if __name__ == "__main__":
    main()
