"""Paired comparison of two ``scunext robustness`` reports on the same images (docs/robustness.md).

    python scripts/robustness_paired.py OUT/lungs OUT/lungs-unext_s

Per image, the mean Dice over the stressed conditions (all shifts and severities, then each shift alone) of report
A minus that of report B; prints a Markdown row per shift: images, mean difference in Dice points, images where A
is better, and the two-sided Wilcoxon signed-rank p-value over images (the image is the unit, not the prediction).
A folder written by ``scunext evaluate`` (``RUN/eval/test``, a per_image.csv without shifts) counts as clean only.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon


def _load(folder: Path) -> dict[str, dict[tuple[str, str], float]]:
    per: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    with (folder / "per_image.csv").open() as f:
        for r in csv.DictReader(f):
            per[r["id"]][(r.get("shift", "clean"), r.get("severity", "0"))] = float(r["dice"])
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    a, b = _load(args.a), _load(args.b)
    if a.keys() != b.keys():
        raise SystemExit("the two reports scored different images")
    # the conditions (shift, severity) both reports scored: an evaluate folder has only the clean one
    common = set.intersection(*(set(v) for v in a.values()), *(set(v) for v in b.values()))
    if not common:
        raise SystemExit("the two reports share no condition (shift, severity) scored on every image")
    shifts = sorted({k[0] for k in common if k[0] != "clean"})
    print(f"A = {args.a.name}, B = {args.b.name}\n")
    left_out = {k for v in [*a.values(), *b.values()] for k in v} - common
    if left_out:
        print(f"({len(left_out)} conditions scored by only one report are left out: {sorted(left_out)[:3]} ...)\n")
    print("| shifts | images | mean difference A - B (Dice points) | A better | Wilcoxon p |")
    print("|---|---:|---:|---:|---:|")
    for sh in ["clean", *(["all stressed", *shifts] if shifts else [])]:
        diffs = []
        for i in sorted(a):
            keys = [k for k in sorted(common)
                    if (k[0] == "clean") == (sh == "clean") and sh in ("clean", "all stressed", k[0])]
            diffs.append(np.mean([a[i][k] for k in keys]) - np.mean([b[i][k] for k in keys]))
        d = np.array(diffs)
        p = wilcoxon(d).pvalue if np.any(d != 0) else float("nan")
        print(f"| {sh} | {len(d)} | {100 * d.mean():+.1f} | {int((d > 0).sum())} / {len(d)} | {p:.2g} |")


if __name__ == "__main__":
    main()
