"""Run a plan: train and score every planned run not yet done, resumably and in shards, and read the numbers back.

Every (row, column) of a table is its own run folder ``EXP/runs/<folder>``: a finished and scored run is skipped, an
interrupted one resumed from its last epoch, a failed one (e.g. NaN) reported and skipped. With ``records`` each
finished run's portable record (:mod:`scunext.experiments.records`) is written to ``records/<folder>`` as soon as it
is scored, and the tables read run folders and records alike, so work done elsewhere counts here.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scunext.engine.evaluate import evaluate_run
from scunext.engine.trainer import train
from scunext.experiments.plan import PlannedRun
from scunext.experiments.records import (
    RecordError,
    _status,
    check_identity,
    export_record,
    find_source,
    is_complete,
    load_result,
)
from scunext.runs import RunDir, RunInUseError
from scunext.runs.durable import remove_tree

__all__ = ["run_plan", "collect"]

log = logging.getLogger(__name__)


def _fmt_s(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def run_plan(
    plan: list[PlannedRun],
    out_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    show_bars: bool = False,
    device: str = "cpu",
    shard: tuple[int, int] | None = None,
    report_only: bool = False,
    records: Path | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every planned run not yet done; returns one result dict per run (see :func:`collect`).

    A run counts as done when its folder says finished and holds the metrics of each part in ``subsets`` (or when
    ``records`` holds a complete record of it: then it is not trained again here). An interrupted run is resumed
    from its last epoch; a run folder that failed (e.g. NaN) is reported and skipped. ``device`` is where the
    held-out parts are scored. ``shard=(I, N)`` runs only every N-th planned run starting at the I-th, so N processes
    (or machines sharing the folder) can work on one experiment; each run folder has one owner. A run another
    process is training (it holds the folder's writer lock) is skipped, never resumed or restarted, so processes
    that overlap (the same shard twice, or no ``--shard``) cannot corrupt each other's runs; the runner holds the
    same lock while it scores and exports a run. ``report_only``
    trains nothing and returns what the run folders and records hold so far (unfinished runs count as missing);
    with ``records`` it also exports the records of finished run folders that have none yet.
    """
    say = progress or (lambda m: log.info("%s", m))
    runs_dir = out_dir / "runs"
    if not report_only:
        runs_dir.mkdir(parents=True, exist_ok=True)
    if records is not None:
        if report_only and not records.is_dir():  # a mistyped path would give a table of empty rows
            raise RecordError(f"--records {records}: folder not found; --report-only reads records, it creates none")
        records.mkdir(parents=True, exist_ok=True)
    mine = set(range(shard[0] - 1, len(plan), shard[1])) if shard else set(range(len(plan)))
    if records is not None and not report_only:
        # a record that is another run's (another model, seed, dataset) counted as "done elsewhere" and failed only
        # in the tables, after every other run had trained: checked before the first run instead
        for j, pr in enumerate(plan):
            if j in mine and is_complete(records / pr.folder, pr.subsets):
                check_identity(records / pr.folder, load_result(records / pr.folder, pr.subsets)["config"],
                               pr.cfg.to_dict())  # fmt: skip
    durations: list[float] = []
    for i, pr in enumerate(plan, 1):
        if i - 1 not in mine:
            continue
        rd = runs_dir / pr.folder
        tag = f"[{i}/{len(plan)}] {pr.row} / {pr.column}"
        status = _status(rd)
        if is_complete(rd, pr.subsets):
            _export(rd, records, pr, say)
            say(f"{tag}: done, skipped")
            continue
        if records is not None and is_complete(records / pr.folder, pr.subsets):
            say(f"{tag}: done elsewhere (record {records / pr.folder}), skipped")
            continue
        if records is not None and (records / pr.folder / "record.json").is_file():
            say(f"{tag}: its record {records / pr.folder} is not complete (status {_status(records / pr.folder)!r} "
                f"or parts missing), not used")  # fmt: skip
        if status == "failed":
            say(f"{tag}: failed earlier ({RunDir(rd).status_file}), skipped")
            continue
        if report_only:
            say(f"{tag}: not finished ({status}), left out of the tables")
            continue
        run = RunDir(rd)
        if run.in_use():
            say(f"{tag}: in use by another process ({run.lock_holder()}), skipped")
            continue
        todo = sum(1 for j in mine if j >= i - 1)
        eta = f", ETA {_fmt_s(statistics.mean(durations) * todo)}" if durations else ""
        say(f"{tag}: {'resuming' if status == 'running' else 'training'}{eta}")
        t0 = time.perf_counter()
        try:
            if status == "running" and run.epochs_done() > 0:
                train(None, rd, resume=True, show_progress=show_bars)
            elif status != "finished":
                if rd.exists():  # started but no finished epoch: start again, unless another process has it now
                    _remove_unstarted(run)
                train(pr.cfg, rd, show_progress=show_bars)
            run.acquire()  # one process scores and exports it (another runner may reach it once training ends)
        except RunInUseError as exc:  # another process took it between the check above and here
            say(f"{tag}: {exc}; skipped")
            continue
        try:
            for subset in pr.subsets:
                if not (run.eval_dir(subset) / "metrics.json").is_file():
                    evaluate_run(rd, subset=subset, hd95=pr.hd95, show_progress=show_bars, device=device)
            _export(rd, records, pr, say)
        finally:
            run.release()
        durations.append(time.perf_counter() - t0)
    return [collect(pr, runs_dir, records) for pr in plan]


def _remove_unstarted(run: RunDir) -> None:
    """Remove a run folder that holds no finished epoch, under its writer lock: the status read before may be stale
    (another runner on the same --out can have started it since), and removing a folder another process trains
    deleted its committed epochs. :class:`RunInUseError` when another process holds it or it has progressed."""
    run.acquire()
    try:
        if run.status() == "finished" or run.epochs_done() > 0:
            raise RunInUseError(f"{run.path} was taken further by another process meanwhile")
        remove_tree(run.path)
    finally:
        run.release()


def _export(rd: Path, records: Path | None, pr: PlannedRun, say: Callable[[str], None]) -> None:
    if records is None:
        return
    dest = records / pr.folder
    if is_complete(dest, pr.subsets) and (dest / "log.csv").is_file() and (
        (dest / "log.csv").read_bytes() == (rd / "log.csv").read_bytes()
    ):
        return  # the same record is there already
    export_record(rd, dest, pr.subsets)
    say(f"record written: {dest}")


def collect(pr: PlannedRun, runs_dir: Path, records: Path | None = None) -> dict[str, Any]:
    """The numbers of one planned run, from its run folder or its record (``None`` values where not finished).

    Keys: ``row``, ``column``, ``run`` (where the numbers come from), ``dice``/``iou``/``dice_pooled``/``hd95``
    (test part), ``n_test``, ``train_seconds``, ``device``, ``epochs``, ``per_image`` (``{part: {id: {dice, iou}}}``),
    ``metrics`` (``{part: metrics.json}``), ``config``, ``planned`` (the planned run's config: the budget it was to
    follow, with its row's own settings, e.g. a Table 2 configuration's loss).
    """
    res: dict[str, Any] = {"row": pr.row, "column": pr.column, "run": str(runs_dir / pr.folder), "dice": None,
                           "iou": None, "dice_pooled": None, "hd95": None, "n_test": None, "train_seconds": None,
                           "device": None, "epochs": pr.cfg.epochs, "per_image": {}, "metrics": {}, "config": {},
                           "host": None, "info": pr.info, "planned": pr.cfg}  # fmt: skip
    source = find_source(pr.folder, runs_dir, records, pr.subsets)
    if source is None:
        return res
    r = load_result(source, pr.subsets)
    check_identity(source, r["config"], pr.cfg.to_dict())
    if r["host"] is None and records is not None and (records / pr.folder / "record.json").is_file():
        r["host"] = load_result(records / pr.folder, ())["host"]  # the training machine, as its record says
    m = r["metrics"]["test"] if "test" in r["metrics"] else next(iter(r["metrics"].values()))
    res.update(run=str(source), dice=m["dice"]["per_image_mean"], iou=m["iou"]["per_image_mean"],
               dice_pooled=m["dice"]["pooled"], n_test=m["n_images"], hd95=(m.get("hd95") or {}).get("per_image_mean"),
               train_seconds=r["train_seconds"], device=r["device"], per_image=r["per_image"], metrics=r["metrics"],
               config=r["config"], host=r["host"])  # fmt: skip
    return res
