"""``predictions.csv``: one row per image (:class:`PredictionRecord`), written row by row (:class:`PredictionsCSV`),
and what an earlier run into the folder finished (:func:`finished_masks`, for ``--skip-done``)."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path, PurePath
from typing import Any

__all__ = ["CSV_NAME", "OutputExistsError", "PredictionRecord", "PredictionsCSV", "FinishedMask", "finished_masks",
           "complete_length", "printable"]

log = logging.getLogger(__name__)

#: the per-image table written next to the masks
CSV_NAME = "predictions.csv"


class OutputExistsError(ValueError):
    """Outputs would replace existing files (and ``overwrite`` was not given)."""


@dataclass
class PredictionRecord:
    """One image's result: one row of ``predictions.csv``.

    The CSV columns are these fields, in this order. To add a column (e.g. a quality score), add a field with a
    default here and fill it in :func:`_measure`, which sees the mask, the low-resolution logits and the header.
    """

    file: str
    mask: str = ""
    height: int | None = None
    width: int | None = None
    area_px: int | None = None
    area_mm2: float | None = None
    score: float | None = None
    review: bool | None = None
    review_reason: str = ""
    status: str = "ok"
    model: str = ""  # what made the mask: weights or run, its sha256, threshold, engine (--skip-done: only its own)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def row(self) -> dict[str, str]:
        """The CSV row: ``None`` as an empty cell, floats with 6 significant digits, text :func:`printable`."""
        out = {}
        for name in self.columns():
            value = getattr(self, name)
            out[name] = "" if value is None else f"{value:.6g}" if isinstance(value, float) else printable(str(value))
        return out


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not UTF-8 on disk (Python holds its bytes as lone surrogates,
    which cannot be written to a UTF-8 file or terminal) shows those bytes as ``\\xNN`` escapes; other text is
    returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class FinishedMask:
    """What ``predictions.csv`` records of a mask written by an earlier run: the input it was made from and the
    ``model`` (weights or run, the weights' sha256, threshold, engine) that made it."""

    file: str
    model: str


def complete_length(path: str | os.PathLike[str]) -> int:
    """Bytes of ``path`` up to the end of its last complete CSV row: a row cut short by a crash (power loss, a full
    disk) ends without its line break, or inside a quoted field (a quote left open would swallow the next run's
    first row into that field). Read line by line: a record ends at a line break outside quotes (CSV doubles the
    quotes inside a field, so counting them tells)."""
    end = pos = quotes = 0
    with open(path, "rb") as fh:
        for line in fh:
            pos += len(line)
            quotes += line.count(b'"')
            if line.endswith(b"\n") and quotes % 2 == 0:
                end = pos
    return end


def _complete_rows(fh: Any, length: int) -> Any:
    """The text lines of ``fh`` within its first ``length`` bytes (an open binary file)."""
    read = 0
    for line in fh:
        if read >= length:
            return
        read += len(line)
        yield line.decode("utf-8", errors="replace")


def finished_masks(table: str | os.PathLike[str]) -> dict[str, FinishedMask]:
    """The file names of the masks that ``predictions.csv`` records as written (``status`` ok), each with the input
    and ``model`` of its latest row; empty if there is no table. Read row by row (a table of millions of rows is not
    held in memory, only the names); an unfinished last row (a run killed while writing it) does not count."""
    path, names = Path(table), {}
    if not path.is_file():
        return names
    with path.open("rb") as fh:
        for row in csv.DictReader(_complete_rows(fh, complete_length(path))):
            if row.get("status") == "ok" and row.get("mask") and None not in row and None not in row.values():
                names[PurePath(row["mask"]).name] = FinishedMask(row.get("file") or "", row.get("model") or "")
    return names


class PredictionsCSV:
    """``predictions.csv``, written row by row (flushed, so a crash keeps the rows done); a context manager.

    An existing file with the same header is appended to, never replaced: the table then keeps every run into the
    folder, and the last row of a file is its latest result. If its last row is unfinished (a crash while writing
    it: no line break at its end, or a quoted field left open), that torn row is cut off (:func:`complete_length`)
    and its input counts as not done. Any other existing file is an error, unless
    ``replace`` (``--overwrite``, which the planner asked for): then a new table replaces it.
    """

    def __init__(self, path: str | os.PathLike[str], replace: bool = False) -> None:
        self.path = Path(path)
        append = self.path.exists() and self.appendable(self.path)
        if self.path.exists() and not append and not replace:
            raise OutputExistsError(f"{self.path}: exists and is not a predictions table of this version; pass "
                                    "--overwrite to replace it, or choose another --out")  # fmt: skip
        self._fh = self.path.open("a" if append else "w" if replace else "x", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=PredictionRecord.columns())
        if not append:
            self._writer.writeheader()
        elif (keep := complete_length(self.path)) < self.path.stat().st_size:
            log.warning("%s: its last row is unfinished (a run stopped while writing it); it is removed, and that "
                        "input counts as not done", self.path)  # fmt: skip
            self._fh.truncate(keep)

    @staticmethod
    def appendable(path: Path) -> bool:
        """Whether ``path`` is a predictions table with today's columns (rows can be appended to it)."""
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return next(csv.reader(fh), None) == PredictionRecord.columns()
        except (OSError, UnicodeDecodeError, csv.Error):
            return False

    def write(self, record: PredictionRecord) -> None:
        self._writer.writerow(record.row())
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PredictionsCSV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
