"""Cross-site evaluation: train on one site, score on its own held-out part and on every other site.

The sites come from the image ids (a regular expression whose group 1 names the site, e.g.
``^(MCUCXR|CHNCXR)_`` for the Montgomery and Shenzhen chest X-rays) or from a site column of a CSV. For each
training site A and seed s: a held-out test part (``test_fraction``) is drawn from A with seed s, a validation part
(``val_fraction``) is carved from the rest of A for checkpoint selection, the rest of A is trained on, and every image
of the other sites is the run's ``external`` part (scored, never used for a choice). The split is written as a CSV in
``EXP/splits/`` and trained with ``split: csv``, so the run's ``split.json`` holds all four parts.

Rows are models (default SC-UNeXt and UNeXt-S) or the paper's 8 Table 2 configurations (``configs="ablation"``);
every row of a (site, seed) column has the same split, so rows are compared image by image.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig, apply_overrides
from scunext.data import DataError, random_split
from scunext.data.splits import read_csv_rows
from scunext.experiments.plan import PlannedRun, check_count, slug
from scunext.experiments.records import RecordError, is_complete, load_result
from scunext.experiments.report import (
    PROTOCOL_KEYS,
    budget_line,
    deviation_notes,
    mean_sd,
    pct,
    per_image_dice,
    write_csv,
)
from scunext.experiments.table2 import TABLE2_CONFIGS, component_effects, edge_loss_line, paired_markdown
from scunext.metrics.paired import paired_comparison
from scunext.models import create_model
from scunext.runs.durable import atomic_write_text

__all__ = ["CROSS_SITE_MODELS", "sites_from_pattern", "sites_from_csv", "cross_site_plan", "summarize_cross_site",
           "cross_site_scores", "SPLIT_COLUMN"]  # fmt: skip

CROSS_SITE_MODELS = ("sc_unext", "unext_s")
SPLIT_COLUMN = "cross_site"


def sites_from_pattern(ids: list[str], pattern: str) -> dict[str, str]:
    """``{id: site}`` where the site is group 1 of ``pattern`` searched in the id (the whole match without groups).

    Raises:
        ValueError: an invalid pattern, ids that match no site (all must), or fewer than two sites.
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--site-pattern {pattern!r} is not a valid regular expression ({exc})") from None
    sites, unmatched = {}, []
    for i in ids:
        m = rx.search(i)
        site = (m.group(1) if rx.groups else m.group(0)) if m else None
        if not site:  # no match, an optional group that took no part (None), or an empty site name
            unmatched.append(i)
            continue
        sites[i] = site
    if unmatched:
        raise ValueError(f"{len(unmatched)} of {len(ids)} images match no site of --site-pattern {pattern!r} "
                         f"(e.g. {unmatched[0]}); every image needs a site")  # fmt: skip
    _check_sites(sites)
    return sites


def sites_from_csv(path: Path, column: str, ids: list[str], id_column: str = "image_id") -> dict[str, str]:
    """``{id: site}`` from a CSV with an id column and a site column; every id of ``ids`` must be listed."""
    path = Path(path)
    header, rows = read_csv_rows(path, "site CSV")
    for name in (id_column, column):
        if name not in header:
            raise DataError(f"{path}: no column {name!r}; columns are {', '.join(header)}")
    table: dict[str, str] = {}
    for line, r in rows:
        key = (r.get(id_column) or "").strip()
        if key in table:  # the last row won: an image trained as the other site's
            raise DataError(f"{path}: id {key!r} is listed twice (line {line})")
        table[key] = (r.get(column) or "").strip()
    missing = [i for i in ids if not table.get(i)]
    if missing:
        raise DataError(f"{path}: {len(missing)} image(s) have no site in column {column!r} (e.g. {missing[0]})")
    sites = {i: table[i] for i in ids}
    _check_sites(sites)
    return sites


def _check_sites(sites: dict[str, str]) -> None:
    names = sorted(set(sites.values()))
    if len(names) < 2:
        raise ValueError(f"found {len(names)} site(s) ({', '.join(names) or 'none'}); cross-site needs at least 2")


def _rows(models: tuple[str, ...] | None, configs: str | None) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    if configs == "ablation":
        return {name: (m, args, loss) for name, (m, args, loss) in TABLE2_CONFIGS.items()}
    if configs is not None:
        raise ValueError(f"--configs must be 'ablation', got {configs!r}")
    models = models or CROSS_SITE_MODELS
    for m in models:
        create_model(m)  # unknown names fail here, listing the valid ones
    return {m: (m, {}, None) for m in models}


def _split_csv_text(sites: dict[str, str], train_site: str, seed: int, base: TrainConfig) -> tuple[str, dict]:
    own = sorted(i for i, s in sites.items() if s == train_site)
    if len(own) < 4:
        raise ValueError(f"site {train_site!r} has {len(own)} images; need at least 4 to train, select and test")
    split = random_split(own, test_fraction=base.test_fraction, seed=seed).with_carved_validation(
        base.val_fraction, seed=seed
    )  # the held-out part of the site becomes test; validation is carved from the training side
    part = {i: "train" for i in split.train} | {i: "val" for i in split.val} | {i: "test" for i in split.test}
    part |= {i: "external" for i, s in sites.items() if s != train_site}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", SPLIT_COLUMN, "site"])
    for i in sorted(part):
        w.writerow([i, part[i], sites[i]])
    counts = {p: sum(v == p for v in part.values()) for p in ("train", "val", "test", "external")}
    return buf.getvalue(), counts


def cross_site_plan(
    base: TrainConfig,
    sites: dict[str, str],
    out_dir: Path,
    seeds: int = 3,
    models: tuple[str, ...] | None = None,
    configs: str | None = None,
    write: bool = True,
) -> list[PlannedRun]:
    """Every row x training site x seed; writes each split to ``out_dir/splits/train-SITE-seed-S.csv``.

    Everything is checked before the first file is written (each site's image count, site names that would share
    a file or folder name, split files already there with other content: the data folder changed, refused and
    never overwritten), so a refused plan leaves nothing. ``write=False`` checks only (the CLI, before it records
    the experiment).
    """
    check_count(seeds, "--seeds", 1)
    rows = _rows(models, configs)
    split_dir = out_dir / "splits"
    names = sorted(set(sites.values()))
    by_slug: dict[str, str] = {}
    for site in names:
        other = by_slug.setdefault(slug(site), site)
        if other != site:
            raise ValueError(f"sites {other!r} and {site!r} have the same file name ({slug(site)!r}) in the "
                             "experiment's folders; rename one of them in the site column")  # fmt: skip
    splits = []
    for site in names:
        for seed in range(seeds):
            text, counts = _split_csv_text(sites, site, seed, base)
            path = split_dir / f"train-{slug(site)}-seed-{seed}.csv"
            if path.is_file() and path.read_text() != text:
                raise ValueError(f"{path} holds another split (has the data folder changed?); use another --out")
            splits.append((site, seed, text, counts, path))
    plan = []
    for site, seed, text, counts, path in splits:
        if write and not path.is_file():
            split_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        column = f"train {site}, seed {seed}"
        for row, (model, args, loss) in rows.items():
            over: dict[str, Any] = {"model": model, "model_args": args, "seed": seed, "split": "csv",
                                    "split_csv": str(path.resolve()), "split_column": SPLIT_COLUMN,
                                    "max_images": 0}  # fmt: skip
            if loss:
                over["loss"] = loss
            cfg = apply_overrides(base, over).validate()
            info = {"train_site": site, "seed": seed, "counts": counts}
            plan.append(PlannedRun(row, column, f"{slug(row)}-train-{slug(site)}-seed-{seed}", cfg,
                                   subsets=("test", "external"), info=info))  # fmt: skip
    return plan


def summarize_cross_site(
    results: list[dict[str, Any]], out_dir: Path, base: TrainConfig, *, n_boot: int = 10_000
) -> str:
    """Write ``cross_site.md``, ``cross_site.csv`` and ``cross_site_paired.csv``; returns the Markdown."""
    rows = list(dict.fromkeys(r["row"] for r in results))
    sites = list(dict.fromkeys(r["info"]["train_site"] for r in results))
    seeds = sorted({r["info"]["seed"] for r in results})
    by = {(r["row"], r["info"]["train_site"], r["info"]["seed"]): r for r in results}
    ref = "UNeXt" if "UNeXt" in rows else ("unext_s" if "unext_s" in rows else rows[0])
    md = [f"Data: `{Path(base.data).name}`; sites: {', '.join(sites)}; seeds: {len(seeds)}. Each run trains on one "
          f"site (validation carved from it), is scored on that site's held-out part ({base.test_fraction:g} of it) "
          "and on every image of the other site(s) (per-image Dice %, native resolution).",
          budget_line(base, results),
          *([edge_loss_line(base)] if any(TABLE2_CONFIGS.get(r, ("", {}, ""))[2] == "joint" for r in rows) else []),
          *deviation_notes(base, results), "",
          "| row | trained on | in-site Dice % mean ± sd | other-site Dice % mean ± sd | drop (points) | runs |",
          "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    csv_rows = []
    for row in rows:
        for site in sites:
            done = [by[(row, site, s)] for s in seeds if by.get((row, site, s), {}).get("dice") is not None]
            ext = [r["metrics"]["external"]["dice"]["per_image_mean"] for r in done]
            ins = [r["dice"] for r in done]
            im, isd = mean_sd(ins)
            em, esd = mean_sd(ext)
            drop = "–" if im is None or em is None else f"{100 * (im - em):.2f}"
            label = row if row in TABLE2_CONFIGS else f"`{row}`"
            md.append(f"| {label} | {site} | {pct(im)} ± {pct(isd)} | {pct(em)} ± {pct(esd)} | {drop} | "
                      f"{len(done)}/{len(seeds)} |")  # fmt: skip
            for s in seeds:
                r = by.get((row, site, s), {})
                m = (r.get("metrics") or {}).get("external")
                csv_rows.append({"row": row, "train_site": site, "seed": s, "in_site_dice": r.get("dice"),
                                 "external_dice": m["dice"]["per_image_mean"] if m else None,
                                 "external_n": m["n_images"] if m else None, "run": r.get("run")})  # fmt: skip
    paired_rows = []
    md += ["", f"Paired difference (row − {ref}), same images, per training site:", "",
           "| row | trained on | scored on | Δ Dice [95 % CI] | Wilcoxon p | per-seed Δ | verdict |",
           "|---|---|---|---:|---:|---|---|"]  # fmt: skip
    for row in rows:
        if row == ref:
            continue
        for site in sites:
            both = [s for s in seeds if by.get((row, site, s), {}).get("dice") is not None
                    and by.get((ref, site, s), {}).get("dice") is not None]  # fmt: skip
            if not both:
                continue
            for part, where in (("external", "other site"), ("test", "own site")):
                a = [per_image_dice(by[(row, site, s)], part) for s in both]
                b = [per_image_dice(by[(ref, site, s)], part) for s in both]
                pr = paired_comparison(a, b, row, ref, n_boot=n_boot, seed=0,
                                       group_names=[f"train {site}, seed {s}, {part}" for s in both])
                md.append(f"| {row} | {site} | {where} | {100 * pr.mean_difference:+.2f} [{100 * pr.ci_low:+.2f}, "
                          f"{100 * pr.ci_high:+.2f}] | {pr.p_value:.3g} | "
                          f"{', '.join(f'{100 * d:+.2f}' for d in pr.per_group)} | {pr.verdict} |")  # fmt: skip
                paired_rows.append({"row": row, "reference": ref, "train_site": site, "scored_on": part,
                                    "seeds": ";".join(map(str, both)), "n_images": pr.n_images,
                                    "mean_difference": pr.mean_difference, "ci_low": pr.ci_low,
                                    "ci_high": pr.ci_high, "wilcoxon_p": pr.p_value,
                                    "per_seed_differences": ";".join(f"{d:.6f}" for d in pr.per_group),
                                    "verdict": pr.verdict})  # fmt: skip
    if any(r in TABLE2_CONFIGS for r in rows):
        for site in sites:
            for part, where in (("external", "other site"), ("test", "own site")):
                scores = {row: {s: per_image_dice(by[(row, site, s)], part) for s in seeds
                                if by.get((row, site, s), {}).get("dice") is not None} for row in rows}  # fmt: skip
                effects = component_effects(scores, n_boot=n_boot)
                if effects:
                    md += ["", f"Per component, trained on {site}, scored on the {where} (pairs of configurations "
                           "that differ only by it, per image):", ""]  # fmt: skip
                    md += paired_markdown(effects, "component")
                    for comp, pr in effects:
                        paired_rows.append({"row": f"+{comp}", "reference": f"no {comp}", "train_site": site,
                                            "scored_on": part, "seeds": ";".join(map(str, seeds)),
                                            "n_images": pr.n_images, "mean_difference": pr.mean_difference,
                                            "ci_low": pr.ci_low, "ci_high": pr.ci_high, "wilcoxon_p": pr.p_value,
                                            "per_seed_differences": ";".join(f"{d:.6f}" for d in pr.per_group),
                                            "verdict": pr.verdict})  # fmt: skip
    md += ["", "95 % CI: stratified bootstrap over images within each seed; the verdict names a winner only when the "
           "CI excludes 0 and p < 0.05 (docs/experiments.md)."]  # fmt: skip
    write_csv(out_dir / "cross_site.csv", csv_rows)
    write_csv(out_dir / "cross_site_paired.csv", paired_rows)
    text = "\n".join(md) + "\n"
    atomic_write_text(out_dir / "cross_site.md", text)
    return text


def cross_site_scores(folder: Path, data: str | Path | None = None) -> dict[str, tuple[float, int]]:
    """``{model: (mean other-site per-image Dice, runs)}`` over the default-configured runs (no switches changed, the
    default loss) of a cross-site experiment folder (``runs/``) or records folder.

    ``data``: the dataset the scores are for (the leaderboard's ``--data``); a run trained on a dataset of another
    folder name is a :class:`RecordError` (the lung score in an ISIC table). A folder without any finished
    cross-site run (a typo, a table1 or run folder) is a ValueError rather than a column of dashes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: cross-site experiment or records folder not found")
    want = Path(str(data)).name if data else None
    seen: dict[str, Path] = {}
    for cand in sorted(folder.glob("runs/*")) + sorted(folder.glob("*")):
        if cand.name not in seen and cand.is_dir() and is_complete(cand, ("test", "external")):
            seen[cand.name] = cand
    by_model: dict[str, list[float]] = {}
    runs: dict[tuple[Any, ...], Path] = {}  # (model, seed, split file): each run counted once, whatever its folder
    protocol: tuple[Path, dict[str, Any]] | None = None
    if not seen:
        raise ValueError(f"{folder}: holds no finished cross-site run (runs/* or records scored on their 'test' and "
                         "'external' parts); is it the cross-site experiment's folder?")  # fmt: skip
    for path in seen.values():
        r = load_result(path, ("external",))
        cfg = r["config"]
        got = Path(str(cfg.get("data") or "")).name
        if want and got != want:
            raise RecordError(f"{path / 'config.yaml'}: a cross-site run on {got!r}, not on {want!r} (--data); give "
                              "the cross-site experiment of the same dataset")  # fmt: skip
        if cfg.get("model_args") or cfg.get("loss", "bce_dice") != TrainConfig().loss:
            continue
        key = (cfg.get("model"), cfg.get("seed"), Path(str(cfg.get("split_csv") or "")).name)
        if key in runs:
            raise RecordError(f"{path}: the same run ({key[0]}, seed {key[1]}, {key[2]}) as {runs[key]}; keep one "
                              "of the two folders")  # fmt: skip
        runs[key] = path
        budget = {k: cfg.get(k) for k in PROTOCOL_KEYS}
        if protocol is None:
            protocol = (path, budget)
        elif budget != protocol[1]:
            diff = [k for k in PROTOCOL_KEYS if budget[k] != protocol[1][k]]
            raise RecordError(f"{path}: trained under another protocol than {protocol[0]} ({', '.join(diff)}); "
                              "a cross-site score averages runs of one protocol")  # fmt: skip
        by_model.setdefault(cfg["model"], []).append(r["metrics"]["external"]["dice"]["per_image_mean"])
    return {m: (sum(v) / len(v), len(v)) for m, v in by_model.items()}
