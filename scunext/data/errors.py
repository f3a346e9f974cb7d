"""The one exception type for problems with user data (files, folders, masks, split files)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A problem with user data: a missing, unreadable or inconsistent file or folder.

    The message is one line that names the file (or folder) and says what is wrong, so that it can be shown to a
    user as is. It subclasses :class:`ValueError`, so ``except ValueError`` also catches it.
    """
