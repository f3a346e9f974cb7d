"""Error types shared across layers."""

from __future__ import annotations

__all__ = ["MissingDependencyError"]


class MissingDependencyError(ImportError):
    """An optional package is needed; the message names the pip install command."""
