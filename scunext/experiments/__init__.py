"""Resumable experiment runners: the paper's tables, the leaderboard and the cross-site evaluation.

Every (row, column) of a table is its own run folder, finished runs are skipped, interrupted ones resumed, and
every number in the tables is read back from a run folder or its portable record (``records``). Modules: ``build``
(an experiment from its settings: checks, plan, tables; what the CLI calls), ``plan``
(planned runs, shards, the settings record), ``runner`` (train/score/collect), ``records`` (portable run records),
``report`` (shared formatting), ``table1``, ``table2``, ``leaderboard``, ``cross_site``.
"""

from __future__ import annotations

from scunext.experiments.cross_site import (
    CROSS_SITE_MODELS,
    cross_site_plan,
    cross_site_scores,
    sites_from_csv,
    sites_from_pattern,
    summarize_cross_site,
)
from scunext.experiments.leaderboard import (
    LEADERBOARD_MODELS,
    PUBLISHED,
    default_models,
    leaderboard_plan,
    summarize_leaderboard,
)
from scunext.experiments.plan import PlannedRun, check_experiment_record, parse_shard
from scunext.experiments.records import export_record, is_complete, load_result
from scunext.experiments.runner import collect, run_plan
from scunext.experiments.table1 import PAPER_TABLE1, TABLE1_MODELS, summarize_table1, table1_plan
from scunext.experiments.table2 import PAPER_TABLE2, TABLE2_CONFIGS, summarize_table2, table2_plan

__all__ = [
    "CROSS_SITE_MODELS",
    "LEADERBOARD_MODELS",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PUBLISHED",
    "PlannedRun",
    "TABLE1_MODELS",
    "TABLE2_CONFIGS",
    "check_experiment_record",
    "collect",
    "cross_site_plan",
    "cross_site_scores",
    "default_models",
    "export_record",
    "is_complete",
    "leaderboard_plan",
    "load_result",
    "parse_shard",
    "run_plan",
    "sites_from_csv",
    "sites_from_pattern",
    "summarize_cross_site",
    "summarize_leaderboard",
    "summarize_table1",
    "summarize_table2",
    "table1_plan",
    "table2_plan",
]
