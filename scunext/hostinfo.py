"""What machine a number was measured on, for the context that every timing and record carries."""

from __future__ import annotations

import functools
import importlib
import platform
from pathlib import Path

__all__ = ["cpu_name", "package_version"]


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


def package_version(module: str) -> str | None:
    """``module.__version__`` (e.g. ``onnxruntime``, ``PIL``, ``pydicom``), None when it is not installed. Read from
    the module, not the distribution's metadata: ``onnxruntime-gpu`` installs the module ``onnxruntime``."""
    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except ImportError:
        return None
