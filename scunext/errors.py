"""Error types shared across layers."""

from __future__ import annotations

__all__ = ["MissingDependencyError"]


class MissingDependencyError(ImportError):
    """An optional package needed for the requested feature is not installed.

    The message is one line that names the pip command to install it.
    """
