"""Compare preprocessing/augmentation variants of the cross-site experiment from their committed run records.

    python scripts/cross_site_variants.py BASE=docs/results/cross-site-lungs-e20 \
        robust=docs/results/cross-site-lungs-robust-e20 [NAME=DIR ...]

Each DIR holds ``records/RUN/eval/{test,external}/per_image.csv`` as written by ``scunext experiment cross-site
--records`` (RUN = ``MODEL-train-SITE-seed-K``). Prints two Markdown tables: per variant, model and training site,
the seeds found and the in-site / other-site per-image mean Dice (mean ± sd over seeds); then every variant against
the first (BASE) on the runs both have (same model, site and seed, so the same images): the paired difference with
its stratified bootstrap 95 % CI, the Wilcoxon p over all paired images and the per-seed differences
(:func:`scunext.metrics.paired.paired_comparison`). ``--rename sc-unext-skip=sc-unext`` pairs an ablation row of
``--configs ablation`` records with the default model's runs.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from scunext.metrics.paired import paired_comparison

RUN = re.compile(r"^(?P<model>.+)-train-(?P<site>[a-z0-9]+)-seed-(?P<seed>\d+)$")
PARTS = {"test": "in-site", "external": "other site"}


def _scores(path: Path) -> dict[str, float]:
    with path.open() as f:
        return {r["id"]: float(r["dice"]) for r in csv.DictReader(f)}


def load(folder: Path, rename: dict[str, str] | None = None) -> dict[tuple[str, str, str], dict[int, dict[str, float]]]:
    """(model, site, part) -> seed -> image id -> Dice, for every finished run record under ``folder`` (model names
    as in the run names, e.g. ``sc-unext``, ``sc-unext-skip``; ``rename`` maps some to others)."""
    out: dict[tuple[str, str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    root = folder / "records" if (folder / "records").is_dir() else folder
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        m = RUN.match(run.name)
        if not m:
            continue
        for part in PARTS:
            f = run / "eval" / part / "per_image.csv"
            if f.is_file():
                model = (rename or {}).get(m["model"], m["model"])
                out[(model, m["site"].upper(), part)][int(m["seed"])] = _scores(f)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="NAME=DIR; the first is the baseline")
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--rename", action="append", default=[], metavar="RUN_MODEL=MODEL",
                    help="treat a run-name model as another, e.g. sc-unext-skip=sc-unext to pair an ablation row "
                    "with the default model's runs (repeatable)")  # fmt: skip
    args = ap.parse_args()
    rename = dict(r.split("=", 1) for r in args.rename)
    variants = {}
    for item in args.variants:
        name, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"expected NAME=DIR with an existing DIR, got {item!r}")
        variants[name] = load(Path(folder), rename)
    print("| variant | model | trained on | seeds | in-site Dice % | other-site Dice % |")
    print("|---|---|---|---|---:|---:|")
    for name, runs in variants.items():
        for model, site in sorted({(k[0], k[1]) for k in runs}):
            cells = []
            for part in PARTS:
                seeds = sorted(runs.get((model, site, part), {}).items())
                per_seed = [100 * np.mean(list(v.values())) for _, v in seeds]
                sd = f" ± {np.std(per_seed, ddof=1):.2f}" if len(per_seed) > 1 else ""
                cells.append(f"{np.mean(per_seed):.2f}{sd}" if per_seed else "–")
            seeds = ",".join(str(s) for s in sorted(runs.get((model, site, "external"), {})))
            print(f"| {name} | `{model}` | {site} | {seeds} | {cells[0]} | {cells[1]} |")
    base_name, base = next(iter(variants.items()))
    print(f"\nPaired against `{base_name}` (same model, training site and seeds, so the same images):\n")
    print("| variant | model | trained on | scored on | seeds | Δ Dice points [95 % CI] | Wilcoxon p | per-seed Δ |")
    print("|---|---|---|---|---|---:|---:|---|")
    for name, runs in list(variants.items())[1:]:
        for key in sorted(runs):
            seeds = sorted(set(runs[key]) & set(base.get(key, {})))
            if not seeds:
                continue
            r = paired_comparison([runs[key][s] for s in seeds], [base[key][s] for s in seeds], name, base_name,
                                  n_boot=args.n_boot)  # fmt: skip
            per_seed = ", ".join(f"{100 * d:+.2f}" for d in r.per_group)
            print(f"| {name} | `{key[0]}` | {key[1]} | {PARTS[key[2]]} | {','.join(map(str, seeds))} | "
                  f"{100 * r.mean_difference:+.2f} [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}] | "
                  f"{r.p_value:.2g} | {per_seed} |")  # fmt: skip


if __name__ == "__main__":
    main()
