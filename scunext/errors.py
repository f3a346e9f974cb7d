"""The project's error types for problems a user can fix (the CLI reports them as one line, without a traceback).

Every message is one line that names the problem and, where there is one, the fix. Anything else that escapes to
the command line is a bug and is shown with its traceback.

- :class:`UsageError`: a bad command-line argument or flag combination (exit code 2).
- :class:`ConfigError`: an invalid configuration value or key (exit code 2); re-exported by :mod:`scunext.config`.
- :class:`MissingDependencyError`: an optional package is not installed; the message names the pip command.

Other typed errors live with their concept and subclass ``ValueError``: ``scunext.data.DataError`` (user data),
``scunext.runs.CheckpointError``, ``scunext.runs.RunFolderError``, ``scunext.models.UnknownModelError`` /
``InputShapeError``, ``scunext.weights.UnknownWeightsError``. A training run that fails on its own (non-finite
loss) raises ``TrainingError`` (exit code 1).
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

__all__ = ["UsageError", "ConfigError", "MissingDependencyError", "OPTIONAL_PACKAGES", "missing_dependency", "shown",
           "MAX_MESSAGE", "is_finite_number"]

#: the most characters of one error line (the CLI cuts a longer message there and says how long it was)
MAX_MESSAGE = 2000

_SHOWN = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHOWN.maxlevel = 2
_SHOWN.maxtuple = _SHOWN.maxlist = _SHOWN.maxarray = _SHOWN.maxdict = _SHOWN.maxset = _SHOWN.maxfrozenset = 4
_SHOWN.maxdeque = 4
_SHOWN.maxstring, _SHOWN.maxlong, _SHOWN.maxother = 80, 40, 80


def is_finite_number(x: Any) -> bool:
    """Whether a value read from a user's file is a finite int or float (not a bool). An integer too large for a
    float (JSON allows 400 digits) is not: ``math.isfinite`` raised OverflowError on it."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def shown(value: Any) -> str:
    """A user's value as it may appear in a one-line message: its ``repr``, cut short (4 items a level, 2 levels
    deep, long strings cut in the middle, ``...`` where cut). A YAML config can hold a list of millions of items in
    a few lines (anchors and aliases), and echoing it whole made a 254 MB "one-line" message."""
    return _SHOWN.repr(value)


class UsageError(ValueError):
    """A bad command-line argument or combination of arguments."""


class ConfigError(ValueError):
    """An invalid configuration value or an unknown key."""


class MissingDependencyError(ImportError):
    """An optional package is missing. The message says which and names the ``pip install`` command."""


#: importable name of each optional package -> the extra of ``pyproject.toml`` that installs it
OPTIONAL_PACKAGES = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "flask": "serve",
    "werkzeug": "serve",
    "albumentations": "train",
    "cv2": "train",
    "matplotlib": "train",
    "highdicom": "dicom-seg",
}


def missing_dependency(exc: ImportError, purpose: str = "") -> MissingDependencyError | None:
    """A :class:`MissingDependencyError` for ``exc`` if it is about one of :data:`OPTIONAL_PACKAGES`, else None.

    An ImportError of anything else (a module of this package, a typo in an import) is a bug and must not be
    reported as a missing extra.
    """
    if isinstance(exc, MissingDependencyError):
        return exc
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in OPTIONAL_PACKAGES:
        return None
    extra = OPTIONAL_PACKAGES[name]
    what = f"{purpose} needs" if purpose else "this needs"
    return MissingDependencyError(f"{what} {name}, which is not installed: pip install 'scunext[{extra}]'")
