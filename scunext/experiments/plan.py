"""What an experiment is made of: planned runs, shards of a plan, and the settings record of an experiment folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig
from scunext.experiments.records import read_json
from scunext.runs.durable import atomic_write_text

__all__ = ["PlannedRun", "parse_shard", "check_experiment_record", "slug", "check_count", "MAX_COUNT"]


@dataclass
class PlannedRun:
    """One training run of an experiment.

    Attributes:
        row: the table row (model or configuration).
        column: the split / seed / fold / direction it belongs to.
        folder: run folder name inside ``EXP/runs/`` (and record folder name).
        cfg: its training config.
        subsets: split parts scored after training (``test``; cross-site runs also ``external``).
        hd95: also compute HD95 when scoring (slower).
    """

    row: str
    column: str
    folder: str
    cfg: TrainConfig
    subsets: tuple[str, ...] = ("test",)
    hd95: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def slug(text: str) -> str:
    """A folder-safe version of ``text`` (unchanged rule: existing experiment folders keep their run names)."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


#: the most seeds or folds one experiment may plan: far more than any table needs. A larger number is a typo
#: (``--seeds 1000000000`` planned billions of runs in memory before the first one started).
MAX_COUNT = 100


def check_count(value: int, flag: str, minimum: int = 1) -> None:
    """Refuse a number of seeds or folds below ``minimum`` or above :data:`MAX_COUNT` with a one-line ValueError."""
    if value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value}")
    if value > MAX_COUNT:
        raise ValueError(f"{flag} must be <= {MAX_COUNT}, got {value}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1-based) -> ``(I, N)``; a clear ValueError otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def _without_unused_test_fraction(base: Any) -> Any:
    """``test_fraction`` set to its default where the split does not use it (csv, kfold): an experiment started
    before such a value was refused (it was ignored) continues with the flag dropped."""
    if isinstance(base, dict) and base.get("split") in ("csv", "kfold"):
        return {**base, "test_fraction": TrainConfig().test_fraction}
    return base


def check_experiment_record(out_dir: Path, record: dict[str, Any]) -> None:
    """Store the experiment's settings in ``experiment.json``; refuse to continue an experiment with others."""
    path = out_dir / "experiment.json"
    if path.is_file():
        old = read_json(path)
        if isinstance(old.get("base_config"), dict):  # settings added to TrainConfig since: their defaults
            old["base_config"] = _without_unused_test_fraction(TrainConfig.from_dict(old["base_config"]).to_dict())
        if "base_config" in record:
            record = {**record, "base_config": _without_unused_test_fraction(record["base_config"])}
        if old != record:
            changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            if "base_config" in changed and isinstance(old.get("base_config"), dict):  # name the settings inside
                was, now = old["base_config"], record.get("base_config") or {}
                inner = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
                changed[changed.index("base_config")] = f"base_config: {', '.join(inner)}"
            raise ValueError(f"{out_dir} holds an experiment with other settings ({', '.join(changed)}); "
                             "use another --out or the same flags")  # fmt: skip
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2))
