"""Moved to :mod:`scunext.runs.checkpoint` (the run-folder layer, importable by deploy/ without a cycle). This
re-export keeps code written against the old path working; new code imports ``scunext.runs``."""

from scunext.runs.checkpoint import *  # noqa: F403
from scunext.runs.checkpoint import __all__  # noqa: F401
