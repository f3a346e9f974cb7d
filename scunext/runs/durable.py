"""Durable file writing: every byte that a run folder relies on goes through here.

``write_file`` writes and fsyncs a file in place (for a staging folder nobody reads yet); ``atomic_write`` writes a
temporary sibling, fsyncs it, renames it over the target and fsyncs the folder, so a crash leaves either the old
or the new file, never half of one (an orphan ``*.tmp*`` at worst, which :class:`~scunext.runs.RunDir` removes).

Fault injection (tests): every primitive calls :func:`_fault_point` first with its operation name (``write``,
``write_mid`` after half the bytes, ``fsync``, ``rename``, ``fsync_dir``, ``remove``) and the path. A test sets
:data:`FAULT_HOOK` to a callable that raises, or runs a subprocess with ``SCUNEXT_FAULT_AT=K`` (the process dies
with ``os._exit(137)``, like a SIGKILL, before its K-th operation) and/or ``SCUNEXT_FAULT_LOG=FILE`` (each
operation is appended to FILE as ``N OP PATH``).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FAULT_HOOK", "write_file", "atomic_write", "atomic_write_text", "fsync_dir", "rename", "remove_tree",
           "orphan_temps", "made_folder", "writer_gone"]

#: a callable ``(op, path) -> None`` called before every durable operation (None: no injection)
FAULT_HOOK: Callable[[str, Path], None] | None = None
_count = 0


def _fault_point(op: str, path: Path) -> None:
    global _count
    _count += 1
    log_file = os.environ.get("SCUNEXT_FAULT_LOG")
    if log_file:
        with open(log_file, "a") as f:
            f.write(f"{_count} {op} {path}\n")
    at = os.environ.get("SCUNEXT_FAULT_AT")
    if at and int(at) == _count:
        os._exit(137)  # no cleanup, no flush: as close to SIGKILL as Python gets
    if FAULT_HOOK is not None:
        FAULT_HOOK(op, path)


def _fsync_fd(fd: int, path: Path) -> None:
    _fault_point("fsync", path)
    os.fsync(fd)


def fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (renames, new files) durable. A no-op where folders cannot be opened."""
    _fault_point("fsync_dir", folder)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (replacing it) and fsync the file; the folder entry is the caller's to fsync."""
    path = Path(path)
    _fault_point("write", path)
    with open(path, "wb") as f:
        half = len(data) // 2
        f.write(data[:half])
        f.flush()
        _fault_point("write_mid", path)
        f.write(data[half:])
        f.flush()
        _fsync_fd(f.fileno(), path)


def rename(src: Path, dst: Path) -> None:
    """``os.replace`` (atomic on one file system)."""
    _fault_point("rename", Path(dst))
    os.replace(src, dst)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    if path.is_dir():  # checked first, so that no temporary file is left beside a folder the rename cannot replace
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    write_file(tmp, data)
    rename(tmp, path)
    fsync_dir(path.parent)


def orphan_temps(folder: Path, names: tuple[str, ...] | list[str]) -> list[Path]:
    """The ``NAME.tmpPID`` files that :func:`atomic_write` of one of ``names`` left in ``folder`` and whose writing
    process is gone (this process counts as gone: its own leftovers come from a write that failed). A temporary
    file of a process that still runs is another writer's write in progress and is not listed."""
    found = []
    for p in sorted(Path(folder).iterdir()):
        stem, sep, pid = p.name.rpartition(".tmp")
        if sep and stem in names and pid.isdigit() and not _other_process_alive(int(pid)):
            found.append(p)
    return found


def writer_gone(pid: int) -> bool:
    """Whether the process ``pid`` that wrote a temporary file is gone, so that its file is an orphan (this
    process counts as gone: its own leftovers come from a write that failed)."""
    return not _other_process_alive(pid)


def _other_process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(Path(path), text.encode("utf-8"))


def remove_tree(path: Path) -> None:
    """Remove a file or folder if it exists.

    Another process may remove the same path (or files inside it) between the check and the removal (two
    evaluations replacing one report): what is already gone counts as removed, never as an error.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    _fault_point("remove", path)
    if path.is_dir() and not path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=_gone_is_removed)
        else:  # onerror gets (type, value, traceback)
            shutil.rmtree(path, onerror=lambda f, p, info: _gone_is_removed(f, p, info[1]))
    else:
        path.unlink(missing_ok=True)


@contextmanager
def made_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` and its missing parents for the body; if the body fails or is stopped (Ctrl+C, SIGTERM),
    remove again the folders it created, deepest first, as long as they are empty (a user's file, or another
    process's output written there meanwhile, keeps its folder)."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _gone_is_removed(function: Callable, path: str, error: BaseException) -> None:
    if not isinstance(error, FileNotFoundError):
        raise error
