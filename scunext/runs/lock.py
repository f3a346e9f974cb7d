"""One writer per run folder: an advisory lock that a crash cannot leave behind.

The lock is ``flock(LOCK_EX)`` on ``FOLDER/.writer.lock``, a file that names its holder (pid and host) for the
error message and is removed when the lock is released, so a folder nobody writes holds no lock file. The kernel
drops the lock when the holding process exits for any reason (an exception, ``kill -9``, a power cut): a crash can
leave the file behind but never a lock, so there is no stale lock to clean up and no timeout to guess.
Locks taken through two ``open`` calls conflict even inside one process, so a second :class:`FolderLock` on the
same folder is refused like another process would be.

A lock taken on a folder still has it after the folder is renamed (the lock belongs to the open file, not to its
name): :meth:`scunext.runs.RunDir.create` locks its hidden staging folder and renames it into place locked.

Where ``fcntl`` does not exist (Windows) no lock is taken and :meth:`FolderLock.acquire` always succeeds (logged
once at debug level); the run folder's crash consistency does not depend on the lock, only the protection
against two writers does. Locks over NFS depend on the server's lock support.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FolderLock"]

log = logging.getLogger(__name__)

#: what flock(LOCK_NB) says when another holder has the lock (anything else: the file system cannot lock)
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class FolderLock:
    """The writer lock of one folder. Not thread-safe; one object per writer."""

    NAME = ".writer.lock"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def file(self) -> Path:
        return self.folder / self.NAME

    @property
    def held(self) -> bool:
        """This object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; ``True`` when it is (now) held by this object, ``False`` when another
        holder has it. The folder must exist. On a file system without locks (some network or FUSE mounts) or a
        platform without ``fcntl`` it warns (debug on Windows) and returns ``True`` without a lock."""
        if self._fd is not None:
            return True
        if fcntl is None:  # pragma: no cover - Windows
            log.debug("no fcntl on this platform: %s is not locked against a second writer", self.folder)
            return True
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _HELD:
                    return False
                log.warning("%s: file locks are not supported here (%s); not protected against a second writer",
                            self.folder, exc.strerror)  # fmt: skip
                return True
            if self._is_current(fd):
                break
            # the previous holder removed the file between our open and our lock: lock the current one instead
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def _is_current(self, fd: int) -> bool:
        try:
            here, named = os.fstat(fd), os.stat(self.file)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (named.st_dev, named.st_ino)

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held). The file is removed while still locked,
        and :meth:`acquire` only keeps a lock on the file the name points to, so no two holders can result."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.file.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def taken_elsewhere(self) -> bool:
        """Another holder (another process, or another object of this one) has the lock now. Read-only: a folder
        or lock file that does not exist is not locked."""
        if self._fd is not None or fcntl is None or not self.file.is_file():
            return False
        try:
            fd = os.open(self.file, os.O_RDONLY)
        except OSError:
            return False
        try:  # a shared probe: it never blocks another prober, only conflicts with a holder
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in _HELD  # else: no lock support on this file system, so nobody holds one
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def holder(self) -> str:
        """Who took the lock last, as written in the file (``pid N on HOST``), or ``another process``."""
        try:
            text = self.file.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text.splitlines()[0][:120] if text else "another process"

    def moved_to(self, folder: str | Path) -> None:
        """The locked folder was renamed to ``folder`` (the lock goes with it)."""
        self.folder = Path(folder)
