"""Portable run records: what a finished run leaves behind for the tables, without its weights.

A record is a folder ``RECORDS/<run>/`` holding copies of the run folder's ``config.yaml``, ``split.json``,
``log.csv`` and, for every scored part, ``eval/<part>/metrics.json`` and ``eval/<part>/per_image.csv``, plus a
``record.json`` (format, status, training seconds summed from ``log.csv``, the device the run trained on, the
exporting host). It is a few kB to ~100 kB, so it can be committed (``docs/results/<experiment>/``) and carried from
one machine to the next; every table of the experiment runners can be rebuilt from records alone.

Only those files of a run folder are read (not checkpoints, not other metadata files), so a record can be made from
any run folder of this format and a record folder reads like a run folder.

Records travel between machines and through hand merges, so every file is checked when it is read
(:func:`load_result`): unreadable or misshapen files, metrics that are not finite or outside [0, 1], per-image rows
with repeated ids, ids that are not the run's own scored part (``split.json``), summary metrics that disagree with
the per-image rows, negative or overflowing epoch times, a ``config.yaml`` that is not a valid run config, and
(:func:`check_identity`) a record that belongs to another model, seed, split or dataset than the run it stands for.
Each is a :class:`RecordError` naming the file: a table is never built from a damaged record.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from scunext.config import TrainConfig
from scunext.errors import ConfigError, is_finite_number, shown
from scunext.hostinfo import cpu_name
from scunext.runs import RunDir

__all__ = ["RECORD_FORMAT", "RecordError", "check_identity", "read_json", "export_record", "is_complete", "load_result",
           "train_seconds_from_log", "find_source"]

log = logging.getLogger(__name__)

RECORD_FORMAT = "scunext-run-record/1"
_FILES = ("config.yaml", "split.json", "log.csv")
_EVAL_FILES = ("metrics.json", "per_image.csv")


class RecordError(ValueError):
    """A run folder or record whose files are damaged or belong to another run; the message names the file."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or :class:`RecordError` naming the file (unreadable, not JSON, not an object)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # (5,000-digit ints, deep nesting)
        raise RecordError(f"{path}: not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a JSON object")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
        raise RecordError(f"{path}: not readable YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a YAML mapping")
    return data


def _status(run_dir: Path) -> str:
    """``finished`` for a finished run folder or a record; else the run's status (``new`` when none)."""
    rec = run_dir / "record.json"
    if rec.is_file():
        return str(read_json(rec).get("status", "new"))
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
    try:
        with log_csv.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("epoch_seconds"):
                    seconds = float(row["epoch_seconds"])
                    if not (math.isfinite(seconds) and seconds >= 0):
                        raise ValueError(f"epoch_seconds {seconds} of epoch {row.get('epoch')}")
                    per_epoch[row["epoch"]] = seconds
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise RecordError(f"{log_csv}: not a readable training log ({exc})") from None
    total = sum(per_epoch.values())
    if not math.isfinite(total):  # each finite, the sum not (1e308 + 1e308)
        raise RecordError(f"{log_csv}: not a readable training log (the epoch_seconds add up to {total})")
    return round(total, 2) if per_epoch else None


def _run_device(run_dir: Path) -> str:
    for name in ("record.json", "run.json"):
        p = run_dir / name
        if p.is_file():
            dev = read_json(p).get("device")
            if dev:
                return str(dev)
    cfg = RunDir(run_dir).config_file
    if cfg.is_file():
        return str(_read_yaml(cfg).get("device", "?"))
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
        "host": {"machine": platform.machine(), "cpu": cpu_name(),
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


#: per-image scores that are fractions (HD95 is a distance: finite and >= 0 where defined)
_FRACTIONS = ("dice", "iou")


def _per_image(path: Path) -> dict[str, dict[str, float]]:
    """``{id: {dice, iou, hd95}}`` of a ``per_image.csv``; every id once, Dice and IoU in [0, 1] where defined (``nan``:
    undefined under the metrics' empty-mask policy, counted against its ``n_undefined``; HD95 of an empty mask)."""
    _require(path)  # the paired tests and the mean check read it
    out: dict[str, dict[str, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"id", "dice"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"no {', '.join(sorted(missing))} column")
            for n, row in enumerate(reader, 2):
                rec = {}
                for k in ("dice", "iou", "hd95"):
                    v = row.get(k)
                    if k == "dice" and v in (None, ""):
                        raise ValueError(f"line {n}: no dice value")
                    if v in (None, "", "None", "nan"):  # undefined (empty-mask policy; HD95 of an empty mask)
                        continue
                    x = float(v)
                    if k in _FRACTIONS and not 0 <= x <= 1:  # also NaN
                        raise ValueError(f"line {n}: {k} {v} is not in [0, 1]")
                    if k == "hd95" and not (math.isfinite(x) and x >= 0):
                        raise ValueError(f"line {n}: hd95 {v} is not a finite distance")
                    rec[k] = x
                if row["id"] in out:
                    raise ValueError(f"line {n}: image {row['id']!r} a second time")
                out[row["id"]] = rec
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise RecordError(f"{path}: damaged per-image table ({exc})") from None
    return out


def _check_metrics(path: Path, m: dict[str, Any], per_image: dict[str, dict[str, float]],
                   part_ids: list[str]) -> None:  # fmt: skip
    """The summary of one scored part agrees with itself, with its per-image rows and with the run's split."""

    for k in _FRACTIONS:
        entry = m.get(k)
        values = [entry.get(v) for v in ("per_image_mean", "pooled")] if isinstance(entry, dict) else [None]
        if not all(is_finite_number(x) and 0 <= x <= 1 for x in values):
            raise RecordError(f"{path}: {k} needs per_image_mean and pooled in [0, 1], got {entry!r:.80}")
    hd = m.get("hd95")
    hd = hd.get("per_image_mean") if isinstance(hd, dict) else hd
    if hd is not None and not (is_finite_number(hd) and hd >= 0):
        raise RecordError(f"{path}: hd95 per_image_mean {hd!r} is not a finite distance")
    n = m.get("n_images")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RecordError(f"{path}: n_images {n!r} is not a positive count")
    if per_image:
        if len(per_image) != n:
            raise RecordError(f"{path}: n_images {n} but per_image.csv has {len(per_image)} images")
        defined = [r["dice"] for r in per_image.values() if "dice" in r]
        undefined = m["dice"].get("n_undefined") or 0
        if isinstance(undefined, bool) or not isinstance(undefined, int) or undefined < 0:
            raise RecordError(f"{path}: dice n_undefined {shown(undefined)} is not a count")
        if len(defined) + undefined != n:
            raise RecordError(f"{path}: per_image.csv has {n - len(defined)} images without a Dice value, the "
                              f"summary {undefined}")  # fmt: skip
        mean = sum(defined) / max(len(defined), 1)
        if abs(mean - m["dice"]["per_image_mean"]) > 1e-4:
            raise RecordError(f"{path}: dice per_image_mean {m['dice']['per_image_mean']:.6f} but the mean of "
                              f"per_image.csv is {mean:.6f}")  # fmt: skip
    if set(per_image) != set(part_ids):
        differ = len(set(per_image) ^ set(part_ids))
        raise RecordError(f"{path}: its images are not the run's scored part in split.json ({len(per_image)} "
                          f"scored, {len(part_ids)} in the part, {differ} differ)")  # fmt: skip


def _require(path: Path) -> None:
    if not path.is_file():
        raise RecordError(f"{path}: missing; a run's record needs its config.yaml, split.json and each scored part's "
                          "metrics.json and per_image.csv (scunext experiment ... --records exports them)")  # fmt: skip


def _part_ids(source: Path, part: str) -> list[str]:
    """The ids of a part in the run's ``split.json``, which must list it: without them the scores could not be
    checked against the run's own images."""
    path = source / "split.json"
    _require(path)
    split = read_json(path)
    if not isinstance(split, dict) or part not in split:
        raise RecordError(f"{path}: lists no {part!r} part, so the {part} scores cannot be checked against the run's "
                          "images")  # fmt: skip
    ids = split[part]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RecordError(f"{path}: part {part!r} is {shown(ids)}, not a list of image ids")
    return ids


def load_result(source: Path, subsets: tuple[str, ...] = ("test",)) -> dict[str, Any]:
    """The numbers of a complete run folder or record: ``metrics``/``per_image`` per part, seconds, device, config.

    Raises:
        RecordError: a damaged file, or numbers that disagree (module docstring); the message names the file.
    """
    _require(source / "config.yaml")  # without it no identity, budget or dataset check could be made
    cfg = _read_yaml(source / "config.yaml")
    try:
        TrainConfig.from_dict(cfg)  # the tables read its settings (budget, protocol): they must be a config's
    except ConfigError as exc:
        raise RecordError(f"{source / 'config.yaml'}: {exc}") from None
    host = None
    if (source / "record.json").is_file():
        h = read_json(source / "record.json").get("host") or {}
        if isinstance(h, dict):
            host = f"{h.get('cpu', '?')}, {h.get('cpu_count', '?')} cores, torch {h.get('torch', '?')}"
    res: dict[str, Any] = {"source": str(source), "config": cfg, "device": _run_device(source), "host": host,
                           "train_seconds": train_seconds_from_log(source / "log.csv"), "metrics": {},
                           "per_image": {}}  # fmt: skip
    for s in subsets:
        metrics_file = source / "eval" / s / "metrics.json"
        res["metrics"][s] = read_json(metrics_file)
        res["per_image"][s] = _per_image(source / "eval" / s / "per_image.csv")
        _check_metrics(metrics_file, res["metrics"][s], res["per_image"][s], _part_ids(source, s))
    return res


#: the settings that make a run the one a table planned (a change of budget, e.g. epochs, is marked in the tables
#: instead: :data:`scunext.experiments.report.PROTOCOL_KEYS`)
IDENTITY_KEYS = ("model", "model_args", "seed", "split", "fold", "split_column", "loss", "loss_args")


def check_identity(source: Path, recorded: dict[str, Any], planned: dict[str, Any]) -> None:
    """Refuse the numbers of ``source`` for a planned run when its saved config is another run's: another model,
    seed, split, fold, loss or dataset (by the data folder's name, so that records from another machine match).
    Keys a config does not hold (older runs) are not compared."""
    diffs = [f"{k} {recorded[k]!r} (planned {planned[k]!r})" for k in IDENTITY_KEYS
             if k in recorded and k in planned and recorded[k] != planned[k]]  # fmt: skip
    data = (Path(str(recorded.get("data") or "")).name, Path(str(planned.get("data") or "")).name)
    if "data" in recorded and "data" in planned and data[0] != data[1]:
        diffs.append(f"data {data[0]!r} (planned {data[1]!r})")
    if diffs:
        raise RecordError(f"{source / 'config.yaml'}: another run than the one planned here: {'; '.join(diffs)}")
