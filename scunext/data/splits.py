"""Seeded, persisted train/val/test splits of sample ids.

Roles: ``train`` is fitted on; ``val`` is used for model selection (checkpoint choice, early stopping); ``test`` is
only reported and never used for any choice. A score on ``val`` is biased upward by the selection made on it.

Methods (all deterministic for a seed: ids are sorted, then shuffled with ``random.Random(seed)``; each part is
returned sorted):

- :func:`random_split`: the paper's protocol, an 80/20 train/test split.
- :func:`kfold_split`: k folds; fold ``k`` is the held-out ``test`` part, the other folds are ``train``.

The held-out part is always called ``test``, whatever made it (a random draw, a fold, a CSV column); ``val`` is
always the part that model selection looks at.
- :func:`csv_split`: a split column of a CSV file, e.g. the official ISIC 2017 split in ``splits.csv``.
- :func:`carve_validation` / :meth:`Split.with_carved_validation`: carve a selection set out of the *training*
  side, never out of the test part, so that the held-out part can be reported without selection bias.

A :class:`Split` is saved with :meth:`Split.to_json` and read back with :meth:`Split.from_json`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scunext.checksum import sha256_file
from scunext.data.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "SPLIT_FORMAT",
    "Split",
    "random_split",
    "kfold_split",
    "csv_split",
    "read_csv_rows",
    "carve_validation",
    "DEFAULT_CSV_VALUES",
]


def read_csv_rows(
    path: str | os.PathLike[str], what: str = "CSV"
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header (names stripped: ``"image_id, site"``) and ``(line, row)`` of every row of a CSV with a header
    row (a UTF-8 BOM is dropped; ``line`` is the file line the row ends on, blank and continued lines counted). One
    :class:`DataError` naming the file for a missing file or a folder, text that is not UTF-8, a field over the csv
    module's limit, an empty file and a header that names a column twice (``split,split``: which one would be read
    was the last one, silently). ``what`` names the file in the messages (``split CSV``, ``site CSV``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise DataError(f"{path}: column(s) {', '.join(map(repr, twice))} named twice in the header; keep one")
            reader.fieldnames = header
            for row in reader:
                rows.append((reader.line_num, row))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc
    if not header:
        raise DataError(f"{path}: empty CSV (no header row)")
    return header, rows


SPLIT_FORMAT = "scunext-split/1"
"""Value of the ``"format"`` key in split JSON files."""

PARTS = ("train", "val", "test")
#: optional parts beside PARTS: ``external`` holds ids of another site or set, only scored (never trained on or used
#: for a choice); written to split JSON only when non-empty, so older split files are unchanged.
EXTRA_PARTS = ("external",)

DEFAULT_CSV_VALUES: dict[str, str | None] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "external": "external",
}
"""How :func:`csv_split` maps split-column values (lower-cased, stripped) to parts by default."""

Strata = Callable[[str], str] | Mapping[str, str]


def _examples(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(str(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")


@dataclass
class Split:
    """Sample ids of the train, val and test parts, plus a description of how they were made.

    Attributes:
        train: ids to train on.
        val: ids for model selection (may be empty: then select by a fixed schedule, e.g. the last epoch).
        test: ids only reported (may be empty).
        external: ids of another site or set, only reported (e.g. the cross-site experiment); usually empty.
        description: JSON-serialisable provenance, e.g. ``{"method": "random", "seed": 0, "test_fraction": 0.2}``.

    Raises:
        ValueError: an id that is not a non-empty string, or an id listed twice (within or across parts).
    """

    train: list[str]
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for part in PARTS + EXTRA_PARTS:
            ids = list(getattr(self, part))
            for i in ids:
                if not isinstance(i, str) or not i:
                    raise ValueError(f"split part {part!r} holds an invalid id {i!r} (ids are non-empty strings)")
                if i in seen:
                    where = part if seen[i] == part else f"{seen[i]} and {part}"
                    raise ValueError(f"id {i!r} appears more than once ({where}); split parts must be disjoint")
                seen[i] = part
            setattr(self, part, ids)
        self.description = dict(self.description)

    @property
    def ids(self) -> list[str]:
        """All ids of the split, sorted."""
        return sorted(self.train + self.val + self.test + self.external)

    def counts(self) -> dict[str, int]:
        """Number of ids per part (``external`` only when non-empty)."""
        counts = {part: len(getattr(self, part)) for part in PARTS}
        if self.external:
            counts["external"] = len(self.external)
        return counts

    def with_carved_validation(self, fraction: float = 0.1, seed: int = 0, strata: Strata | None = None) -> Split:
        """An honest copy: the held-out part is kept for reporting only and ``val`` is carved from ``train``.

        ``fraction`` of ``train`` becomes the new ``val`` (:func:`carve_validation`); the test part (e.g. the 20 %
        of :func:`random_split` or the held-out fold of :func:`kfold_split`) is never touched. A split from
        elsewhere that holds out only a ``val`` part (no ``test``) has that part moved to ``test`` first, so that
        it is reported and never selected on.

        Raises:
            ValueError: nothing is held out, or the split already has both a val and a test part.
        """
        if self.test and self.val:
            raise ValueError("split already has a val part and a test part; nothing to carve")
        test = self.test or self.val
        if not test:
            raise ValueError("split holds nothing out (val and test are empty); nothing would be left to report")
        train, val = carve_validation(self.train, fraction, seed, strata=strata)
        description = dict(self.description)
        description["carved_validation"] = {
            "fraction": fraction,
            "seed": seed,
            "from": "train",
            "stratified": strata is not None,
            "held_out_part_moved_to_test": not self.test,
        }
        return Split(train=train, val=val, test=sorted(test), description=description, external=self.external)

    def to_dict(self) -> dict[str, Any]:
        """The JSON structure written by :meth:`to_json`."""
        data = {
            "format": SPLIT_FORMAT,
            "description": self.description,
            "counts": self.counts(),
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }
        if self.external:
            data["external"] = list(self.external)
        return data

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the split as JSON (see :meth:`to_dict`), creating parent folders; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "split") -> Split:
        """Build a split from :meth:`to_dict` output; raises DataError naming ``source`` if malformed."""
        if not isinstance(data, Mapping):
            raise DataError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != SPLIT_FORMAT:
            raise DataError(f"{source}: not a split file (format {data.get('format')!r}, expected {SPLIT_FORMAT!r})")
        parts = {}
        for part in PARTS + EXTRA_PARTS:
            value = data.get(part, [])
            if not isinstance(value, list):
                raise DataError(f"{source}: {part!r} must be a list of ids, got {type(value).__name__}")
            parts[part] = value
        description = data.get("description", {})
        if not isinstance(description, Mapping):
            raise DataError(f"{source}: 'description' must be an object")
        try:
            return cls(**parts, description=dict(description))
        except ValueError as exc:
            raise DataError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Split:
        """Read a split written by :meth:`to_json`.

        Raises:
            DataError: missing file, invalid JSON, wrong format or overlapping parts.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: split file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # (incl. 5,000-digit ints, deep nesting)
            raise DataError(f"{path}: invalid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))


def id_key(sample_id: str) -> str:
    """The form in which two ids are compared: Unicode normal form C, so that an id typed on one system (a split
    CSV, a run's split.json) matches the same name written by another (macOS stores ``ü`` decomposed)."""
    return unicodedata.normalize("NFC", sample_id)


def _check_ids(ids: Iterable[str]) -> list[str]:
    """Sorted unique list of ids; raises ValueError for duplicates, non-strings or an empty input."""
    if isinstance(ids, str):
        raise ValueError("ids must be a collection of id strings, not a single string")
    out = list(ids)
    if not out:
        raise ValueError("ids is empty; nothing to split")
    bad = [i for i in out if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"ids must be non-empty strings, got {bad[0]!r}")
    if len(set(out)) != len(out):
        dups = sorted({i for i in out if out.count(i) > 1})
        raise ValueError(f"ids contain duplicates: {_examples(dups)}")
    return sorted(out)


def _check_fraction(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return seed


def _count(n: int, fraction: float) -> int:
    """round(n * fraction), half up, and at least 1 when fraction > 0."""
    if fraction <= 0:
        return 0
    return max(1, math.floor(n * fraction + 0.5))


def _groups(ids: list[str], strata: Strata | None) -> list[list[str]]:
    """Sorted ids grouped by stratum (groups in sorted stratum order); one group without strata."""
    if strata is None:
        return [ids]
    lookup = strata.__getitem__ if isinstance(strata, Mapping) else strata
    by: dict[str, list[str]] = {}
    for i in ids:
        try:
            key = lookup(i)
        except KeyError:
            raise ValueError(f"strata has no entry for id {i!r}") from None
        by.setdefault(str(key), []).append(i)
    return [by[k] for k in sorted(by)]


def _take(ids: list[str], fractions: Sequence[float], seed: int, strata: Strata | None) -> list[list[str]]:
    """Shuffle (per stratum) and cut off ``round(n * f)`` ids for each fraction; the rest comes last."""
    rng = random.Random(seed)
    parts: list[list[str]] = [[] for _ in range(len(fractions) + 1)]
    for group in _groups(ids, strata):
        shuffled = list(group)
        rng.shuffle(shuffled)
        start = 0
        for k, f in enumerate(fractions):
            n = _count(len(group), f) if strata is None else math.floor(len(group) * f + 0.5)
            parts[k].extend(shuffled[start : start + n])
            start += n
        parts[-1].extend(shuffled[start:])
    return [sorted(p) for p in parts]


def random_split(
    ids: Iterable[str],
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    strata: Strata | None = None,
) -> Split:
    """Random split: ``test_fraction`` of the ids to ``test`` (held out), the rest to ``train``; ``val`` is empty.

    The default is the paper's 80/20 train/test split (run it with several seeds for mean and variance). Model
    selection needs a ``val`` part that is not the test part: carve it from the training side with
    :meth:`Split.with_carved_validation` (what ``scunext train`` does).

    The test part gets ``round(n * test_fraction)`` ids (at least 1). With ``strata`` (a function or mapping id ->
    group, e.g. ``lambda i: i[:6]`` for the lung subsets MCUCXR/CHNCXR), the draw is done per group, rounded per
    group.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1), too few ids, duplicate ids, no train left.
    """
    ids = _check_ids(ids)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    seed = _check_seed(seed)
    test, train = _take(ids, [test_fraction], seed, strata)
    if not train or not test:
        raise ValueError(
            f"cannot split {len(ids)} ids with test_fraction={test_fraction}: got train {len(train)}, "
            f"test {len(test)}"
        )
    description = {
        "method": "random",
        "seed": seed,
        "test_fraction": test_fraction,
        "stratified": strata is not None,
        "n_ids": len(ids),
    }
    return Split(train=train, val=[], test=test, description=description)


def kfold_split(
    ids: Iterable[str], folds: int = 5, fold: int = 0, seed: int = 0, *, strata: Strata | None = None
) -> Split:
    """Fold ``fold`` of a seeded k-fold partition: that fold is the held-out ``test`` part, the other folds are
    ``train`` (``val`` is empty: carve it from ``train`` with :meth:`Split.with_carved_validation`).

    The sorted ids are shuffled once with ``random.Random(seed)`` (per stratum, strata concatenated in sorted
    order) and dealt round-robin into the folds, so fold sizes differ by at most one and, with ``strata``, each
    group is spread evenly. The same ``seed`` gives the same partition for every ``fold``, so the ``test`` parts
    of ``fold = 0 .. folds-1`` partition the ids.

    Raises:
        ValueError: ``folds < 2``, ``fold`` outside ``[0, folds)``, fewer ids than folds, duplicate ids.
    """
    ids = _check_ids(ids)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"fold must be an int in [0, {folds}), got {fold!r}")
    seed = _check_seed(seed)
    if len(ids) < folds:
        raise ValueError(f"cannot make {folds} folds from {len(ids)} ids")
    rng = random.Random(seed)
    order: list[str] = []
    for group in _groups(ids, strata):
        shuffled = list(group)
        rng.shuffle(shuffled)
        order.extend(shuffled)
    test = sorted(order[fold::folds])
    held = set(test)
    train = [i for i in ids if i not in held]
    description = {
        "method": "kfold",
        "seed": seed,
        "folds": folds,
        "fold": fold,
        "stratified": strata is not None,
        "n_ids": len(ids),
    }
    return Split(train=train, val=[], test=test, description=description)


def carve_validation(
    train_ids: Iterable[str], fraction: float = 0.1, seed: int = 0, *, strata: Strata | None = None
) -> tuple[list[str], list[str]]:
    """Carve a validation (model selection) part out of training ids; returns ``(train, val)``, both sorted.

    ``val`` gets ``round(n * fraction)`` ids (at least 1, and at least 1 id stays in ``train``). Call it on the
    training side only; the test part must never feed model selection.

    Raises:
        ValueError: ``fraction`` outside (0, 1), fewer than 2 ids, duplicate ids.
    """
    ids = _check_ids(train_ids)
    fraction = _check_fraction("fraction", fraction)
    seed = _check_seed(seed)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 training ids to carve a validation part, got {len(ids)}")
    val, train = _take(ids, [fraction], seed, strata)
    if not val or not train:
        raise ValueError(f"cannot carve fraction={fraction} from {len(ids)} ids: train {len(train)}, val {len(val)}")
    return train, val


def csv_split(
    csv_path: str | os.PathLike[str],
    column: str = "isic2017_split",
    *,
    id_column: str = "image_id",
    values: Mapping[str, str | None] | None = None,
    ids: Iterable[str] | None = None,
) -> Split:
    """Split given by a column of a CSV file, e.g. the official ISIC 2017 split of ``splits.csv``.

    Args:
        csv_path: CSV file with a header row (UTF-8, an optional BOM is fine).
        column: column holding each id's part.
        id_column: column holding the ids.
        values: map from a column value (compared lower-cased and stripped) to ``"train"``, ``"val"``, ``"test"``,
            ``"external"`` (another site, only scored) or ``None`` (leave the row out); default
            :data:`DEFAULT_CSV_VALUES`.
        ids: if given, keep only these ids (e.g. the ids found on disk); each must be in the CSV.

    Raises:
        DataError: missing or empty file, missing column, empty or duplicate id, an unknown value, an id of
            ``ids`` that the CSV does not list.
        ValueError: a ``values`` mapping with a target other than train/val/test/None.
    """
    path = Path(csv_path)
    mapping = {str(k).strip().lower(): v for k, v in (DEFAULT_CSV_VALUES if values is None else values).items()}
    bad_targets = sorted({str(v) for v in mapping.values() if v is not None and v not in PARTS + EXTRA_PARTS})
    if bad_targets:
        raise ValueError(f"values may map only to 'train', 'val', 'test', 'external' or None, got "
                         f"{', '.join(bad_targets)}")  # fmt: skip
    header, rows = read_csv_rows(path, "split CSV")
    for name, what in ((id_column, "id"), (column, "split")):
        if name not in header:
            raise DataError(f"{path}: no {what} column {name!r}; columns are {', '.join(header)}")
    parts: dict[str, list[str]] = {p: [] for p in PARTS + EXTRA_PARTS}
    seen: set[str] = set()
    unknown: dict[str, int] = {}
    absent: list[str] = []  # listed for a part, but not among ``ids``
    # compared in normal form C; a part lists the dataset's own spelling of each id
    wanted = None if ids is None else {id_key(i): i for i in _check_ids(ids)}
    for line, row in rows:
        listed = (row.get(id_column) or "").strip()
        if not listed:
            raise DataError(f"{path}: line {line} has an empty {id_column!r}")
        listed_key = id_key(listed)
        if listed_key in seen:
            raise DataError(f"{path}: id {listed!r} is listed twice (line {line})")
        seen.add(listed_key)
        sample = listed if wanted is None else wanted.get(listed_key, listed)
        value = (row.get(column) or "").strip()
        key = value.lower()
        if key not in mapping:
            unknown.setdefault(value, line)
            continue
        target = mapping[key]
        if target is not None and (wanted is None or listed_key in wanted):
            parts[target].append(sample)
        elif target is not None:
            absent.append(sample)
    if unknown:
        shown = ", ".join(f"{v!r} (line {n})" for v, n in list(unknown.items())[:5])
        raise DataError(f"{path}: unknown value(s) in column {column!r}: {shown}; known: {', '.join(sorted(mapping))}")
    if wanted is not None:
        missing = sorted(wanted[k] for k in wanted.keys() - seen)
        if missing:
            hint = ""
            with_suffix = {k.rsplit(".", 1)[0]: k for k in seen if "." in k}  # 'ISIC_1.jpg' listed for id ISIC_1
            found = [with_suffix[id_key(m)] for m in missing if id_key(m) in with_suffix]
            if found:
                hint = (f"; the CSV lists file names ({found[0]!r} for id {found[0].rsplit('.', 1)[0]!r}): an id is "
                        f"the file name without its extension")  # fmt: skip
            raise DataError(f"{path}: {len(missing)} id(s) are not listed in the CSV: {_examples(missing)}{hint}")
    if absent:  # a partial download, or a CSV of a larger dataset: the parts are smaller than the CSV says
        logger.warning("%s: %d id(s) listed for a part are not among the dataset's images and are left out: %s",
                       path, len(absent), _examples(sorted(absent)))  # fmt: skip
    description = {
        "method": "csv",
        "csv": str(path),
        "csv_sha256": sha256_file(path),
        "column": column,
        "id_column": id_column,
        "n_ids": sum(len(v) for v in parts.values()),
    }
    if absent:
        description["listed_but_absent"] = len(absent)
    return Split(
        train=sorted(parts["train"]), val=sorted(parts["val"]), test=sorted(parts["test"]), description=description,
        external=sorted(parts["external"]),
    )  # fmt: skip
