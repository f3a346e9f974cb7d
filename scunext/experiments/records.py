"""Portable run records: what a finished run leaves behind for the tables, without its weights.

A record is a folder ``RECORDS/<run>/`` holding copies of the run folder's ``config.yaml``, ``split.json``,
``log.csv`` and, for every scored part, ``eval/<part>/metrics.json`` and ``eval/<part>/per_image.csv``, plus a
``record.json`` (format, status, training seconds summed from ``log.csv``, the device the run trained on, the
exporting host). It is a few kB to ~100 kB, so it can be committed (``docs/results/<experiment>/``) and carried from
one machine to the next; every table of the experiment runners can be rebuilt from records alone.

Only those files of a run folder are read (not checkpoints, not other metadata files), so a record can be made from
any run folder of this format and a record folder reads like a run folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from scunext.runs import RunDir

__all__ = ["RECORD_FORMAT", "export_record", "is_complete", "load_result", "train_seconds_from_log", "find_source"]

log = logging.getLogger(__name__)

RECORD_FORMAT = "scunext-run-record/1"
_FILES = ("config.yaml", "split.json", "log.csv")
_EVAL_FILES = ("metrics.json", "per_image.csv")


def _status(run_dir: Path) -> str:
    """``finished`` for a finished run folder or a record; else the run's status (``new`` when none)."""
    rec = run_dir / "record.json"
    if rec.is_file():
        return json.loads(rec.read_text()).get("status", "new")
    return RunDir(run_dir).status()


def is_complete(run_dir: Path, subsets: tuple[str, ...] = ("test",)) -> bool:
    """A finished run (or record) with the metrics of every part in ``subsets``."""
    return _status(run_dir) == "finished" and all(
        (RunDir(run_dir).eval_dir(s) / "metrics.json").is_file() for s in subsets
    )  # fmt: skip


def train_seconds_from_log(log_csv: Path) -> float | None:
    """Training-loop seconds of a run: the sum of ``epoch_seconds`` in its ``log.csv`` (one row per epoch kept)."""
    if not log_csv.is_file():
        return None
    per_epoch: dict[str, float] = {}
    with log_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch_seconds"):
                per_epoch[row["epoch"]] = float(row["epoch_seconds"])
    return round(sum(per_epoch.values()), 2) if per_epoch else None


def _run_device(run_dir: Path) -> str:
    for name in ("record.json", "run.json"):
        p = run_dir / name
        if p.is_file():
            dev = json.loads(p.read_text()).get("device")
            if dev:
                return str(dev)
    cfg = RunDir(run_dir).config_file
    if cfg.is_file():
        return str((yaml.safe_load(cfg.read_text()) or {}).get("device", "?"))
    return "?"


def export_record(run_dir: Path, dest: Path, subsets: tuple[str, ...] | None = None) -> Path:
    """Copy the record of a finished, scored run folder ``run_dir`` to ``dest`` (replacing an older record there).

    ``subsets``: parts to carry (default: every ``eval/<part>/`` with a ``metrics.json``). Written to a temporary
    folder first and renamed, so a crash never leaves a half record that looks complete.

    Raises:
        ValueError: the run is not finished or lacks the metrics of a requested part.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    if subsets is None:
        subsets = tuple(sorted(p.parent.name for p in run_dir.glob("eval/*/metrics.json")))
    if not subsets or not is_complete(run_dir, subsets):
        raise ValueError(f"{run_dir}: not a finished and scored run; nothing to export")
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in _FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    for s in subsets:
        (tmp / "eval" / s).mkdir(parents=True)
        for name in _EVAL_FILES:
            if (run_dir / "eval" / s / name).is_file():
                shutil.copy2(run_dir / "eval" / s / name, tmp / "eval" / s / name)
    import torch

    record = {
        "format": RECORD_FORMAT,
        "status": "finished",
        "run": run_dir.name,
        "exported_from": str(run_dir.resolve()),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": train_seconds_from_log(run_dir / "log.csv"),
        "device": _run_device(run_dir),
        "subsets": list(subsets),
        "host": {"machine": platform.machine(), "cpu": platform.processor() or platform.machine(),
                 "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }  # fmt: skip
    (tmp / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    log.info("record of %s written to %s", run_dir, dest)
    return dest


def find_source(folder: str, runs_dir: Path, records_dir: Path | None, subsets: tuple[str, ...]) -> Path | None:
    """Where a run's numbers are: its run folder when complete, else its record when complete, else None."""
    rd = runs_dir / folder
    if is_complete(rd, subsets):
        return rd
    if records_dir is not None and is_complete(records_dir / folder, subsets):
        return records_dir / folder
    return None


def _per_image(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if not path.is_file():
        return out
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rec = {}
            for k in ("dice", "iou", "hd95"):
                v = row.get(k)
                if v not in (None, "", "nan", "None"):
                    rec[k] = float(v)
            out[row["id"]] = rec
    return out


def load_result(source: Path, subsets: tuple[str, ...] = ("test",)) -> dict[str, Any]:
    """The numbers of a complete run folder or record: ``metrics``/``per_image`` per part, seconds, device, config."""
    cfg = yaml.safe_load((source / "config.yaml").read_text()) if (source / "config.yaml").is_file() else {}
    host = None
    if (source / "record.json").is_file():
        h = json.loads((source / "record.json").read_text()).get("host") or {}
        host = f"{h.get('cpu', '?')}, {h.get('cpu_count', '?')} cores, torch {h.get('torch', '?')}"
    res: dict[str, Any] = {"source": str(source), "config": cfg or {}, "device": _run_device(source), "host": host,
                           "train_seconds": train_seconds_from_log(source / "log.csv"), "metrics": {},
                           "per_image": {}}  # fmt: skip
    for s in subsets:
        res["metrics"][s] = json.loads((source / "eval" / s / "metrics.json").read_text())
        res["per_image"][s] = _per_image(source / "eval" / s / "per_image.csv")
    return res
