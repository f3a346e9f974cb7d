"""An experiment from its settings: the folder check, the planned runs with the settings record, and the tables at
the end. The work behind ``scunext experiment``, which only parses flags into an :class:`ExperimentSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig
from scunext.data import discover_pairs
from scunext.errors import UsageError
from scunext.experiments.cross_site import (
    CROSS_SITE_MODELS,
    cross_site_plan,
    cross_site_scores,
    sites_from_csv,
    sites_from_pattern,
    summarize_cross_site,
)
from scunext.experiments.leaderboard import default_models, latencies, leaderboard_plan, summarize_leaderboard
from scunext.experiments.plan import PlannedRun, check_count, check_experiment_record
from scunext.experiments.report import run_in_channels
from scunext.experiments.table1 import TABLE1_MODELS, summarize_table1, table1_plan
from scunext.experiments.table2 import summarize_table2, table2_plan

__all__ = ["EXPERIMENTS", "OUTPUTS", "ExperimentSpec", "check_out", "plan_experiment", "write_tables"]

EXPERIMENTS = ("table1", "table2", "leaderboard", "cross-site")
#: the tables each experiment writes into its --out
OUTPUTS = {"table1": ("table1.md", "table1.csv", "table1_paired.csv", "table1_paired_images.csv", "table1.png"),
           "table2": ("table2.md", "table2.csv", "table2_paired.csv", "table2.png"),
           "leaderboard": ("leaderboard.md", "leaderboard.csv", "leaderboard_paired.csv", "leaderboard.png"),
           "cross-site": ("cross_site.md", "cross_site.csv", "cross_site_paired.csv")}  # fmt: skip


@dataclass
class ExperimentSpec:
    """What ``scunext experiment EXPERIMENT`` was asked for (``None``: the experiment's default).

    Attributes:
        table: one of :data:`EXPERIMENTS`.
        base: the shared training settings (data, budget) every planned run starts from.
        out: the experiment folder.
        seeds, models, folds: the grid (seeds: splits/seeds; folds: Table 2's k).
        cross_site: the leaderboard's cross-site column source (an experiment folder or its records).
        site_pattern, site_csv, site_column, id_column: how the cross-site experiment finds each image's site.
        configs: ``"ablation"``: the cross-site experiment on Table 2's 8 configurations instead of models.
    """

    table: str
    base: TrainConfig
    out: Path
    seeds: int | None = None
    models: tuple[str, ...] | None = None
    folds: int = 5
    cross_site: Path | None = None
    site_pattern: str | None = None
    site_csv: Path | None = None
    site_column: str = "site"
    id_column: str = "image_id"
    configs: str | None = None


def check_out(out: Path, records: Path | None) -> None:
    """``out`` is an experiment's own folder: not the records folder (whose files are committed), and not a folder
    that holds tables without the ``experiment.json`` that says they are this experiment's (a user's earlier tables
    of another experiment would be overwritten)."""
    if records is not None and out.resolve() == records.resolve():
        raise UsageError("--out and --records are the same folder; the records folder holds only records (choose "
                         "another --out)")  # fmt: skip
    if records is not None and records.exists() and not records.is_dir():
        raise UsageError(f"--records {records} is a file, not a folder (the folder that holds one record per run)")
    if (out / "experiment.json").exists():
        return
    found = [f for outputs in OUTPUTS.values() for f in outputs if (out / f).exists()]
    if found:
        raise UsageError(f"{out} holds {', '.join(found[:3])} but no experiment.json: not this experiment's folder, "
                         "and its tables would be replaced; choose another --out")  # fmt: skip


def plan_experiment(spec: ExperimentSpec, *, report_only: bool = False,
                    check: Callable[[list[PlannedRun]], None] | None = None) -> list[PlannedRun]:
    """The planned runs of ``spec``, after every check that can fail before a run trains, with the settings
    recorded in ``OUT/experiment.json`` (an experiment continued with other settings is refused). ``check`` sees
    the planned runs before anything is written (the CLI refuses settings that the runs would not keep)."""
    check = check or (lambda plan: None)
    base, out = spec.base, spec.out
    if spec.table == "table1":
        models = spec.models or TABLE1_MODELS
        plan = table1_plan(base, spec.seeds, models)
        record = {"table": "table1", "seeds": spec.seeds, "models": list(models), "base_config": base.to_dict()}
    elif spec.table == "table2":
        plan = table2_plan(base, spec.folds)
        record = {"table": "table2", "folds": spec.folds, "base_config": base.to_dict()}
    elif spec.table == "leaderboard":
        if spec.cross_site is not None and not spec.cross_site.is_dir():  # read for the tables, after the last run
            raise UsageError(f"--cross-site {spec.cross_site}: folder not found (the cross-site experiment's "
                             "records folder, or its --out)")  # fmt: skip
        if spec.cross_site is not None:  # ... and checked now (another dataset's runs, no runs), before training
            cross_site_scores(spec.cross_site, data=base.data)
        models = spec.models or default_models()
        plan = leaderboard_plan(base, spec.seeds, models)
        record = {"table": "leaderboard", "seeds": spec.seeds, "models": list(models), "base_config": base.to_dict()}
    elif spec.table == "cross-site":
        seeds = spec.seeds if spec.seeds is not None else (1 if spec.configs else 3)
        check_count(seeds, "--seeds")  # (again in cross_site_plan) before the data is read to find the sites
        ids = [p.id for p in discover_pairs(Path(base.data))]
        if spec.site_pattern is not None:
            sites = sites_from_pattern(ids, spec.site_pattern)
            site_rule: dict[str, Any] = {"pattern": spec.site_pattern}
        else:
            sites = sites_from_csv(Path(spec.site_csv), spec.site_column, ids, spec.id_column)
            site_rule = {"csv": str(Path(spec.site_csv).resolve()), "column": spec.site_column}
        if spec.models and spec.configs:
            raise ValueError("give --models or --configs, not both")
        record = {"table": "cross-site", "seeds": seeds, "models": list(spec.models or CROSS_SITE_MODELS),
                  "configs": spec.configs, "sites": site_rule, "base_config": base.to_dict()}  # fmt: skip
        check(cross_site_plan(base, sites, out, seeds, spec.models, spec.configs, write=False))  # no write
        check_experiment_record(out, record)
        plan = cross_site_plan(base, sites, out, seeds, spec.models, spec.configs)
    else:
        raise ValueError(f"unknown experiment {spec.table!r}; choose from {', '.join(EXPERIMENTS)}")
    check(plan)
    if not report_only:
        discover_pairs(Path(base.data))  # a missing or unusable dataset: one line before the experiment folder exists
        for pr in plan:  # a setting the runs' split ignores: one line now, not at the first run (trainer checks too)
            pr.cfg.check_split_settings()
    check_experiment_record(out, record)
    return plan


def write_tables(spec: ExperimentSpec, results: list[dict[str, Any]], records: Path | None, *, n_boot: int = 10_000,
                 latency: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Write the experiment's tables into ``spec.out`` from the collected ``results``; returns the Markdown. For the
    leaderboard, ``latency`` holds ``threads`` and ``runs`` of the latency column (``None``: no latency column),
    cached in ``(records or out)/latency.json``."""
    out, base = spec.out, spec.base
    out.mkdir(parents=True, exist_ok=True)
    if spec.table == "table1":
        return summarize_table1(results, out, base, n_boot=n_boot)
    if spec.table == "table2":
        return summarize_table2(results, out, base, n_boot=n_boot)
    if spec.table == "cross-site":
        return summarize_cross_site(results, out, base, n_boot=n_boot)
    rows = list(dict.fromkeys(r["row"] for r in results))
    lat = None
    if latency is not None:
        in_ch = base.in_channels or run_in_channels(results)
        lat = latencies(rows, in_ch, latency_cache(out, records), threads=latency["threads"], runs=latency["runs"])
    xs = cross_site_scores(spec.cross_site, data=base.data) if spec.cross_site is not None else None
    return summarize_leaderboard(results, out, base, latency=lat, cross_site=xs, n_boot=n_boot)


def latency_cache(out: Path, records: Path | None) -> Path:
    """Where the leaderboard's latency column is cached: beside the records when there are records (they travel
    between machines with them), else in the experiment folder."""
    return (records or out) / "latency.json"
