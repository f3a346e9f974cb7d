"""What machine a number was measured on, for the context that every timing and record carries."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["cpu_name"]


@functools.cache
def cpu_name() -> str:
    """The processor's model name (Linux: ``model name`` of ``/proc/cpuinfo``, e.g. ``AMD EPYC``); elsewhere, or
    when that is unreadable, :func:`platform.processor` or the architecture (``x86_64``), which alone does not tell
    two machines apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
