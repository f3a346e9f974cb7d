"""``scunext`` command line: parses arguments and calls library functions.

A mistake the user can fix ends in one line ``scunext CMD: error: MESSAGE`` on stderr and exit code 2; a training
run that failed on its own (non-finite loss) in one line and exit code 1; anything else is a bug and shows its
traceback (exit code 1). Ctrl+C exits with 130 ("interrupted") and SIGTERM with 143 ("terminated"), both after
the same cleanup (temporary files removed; run folders resume); a reader of the output that went away (``| head``)
ends the command quietly with 141. What counts as a user mistake (:func:`user_error_exit_code`):

- the project's typed errors (:mod:`scunext.errors`, and the ``ValueError`` subclasses defined in this package:
  ConfigError, DataError, CheckpointError, RunFolderError, UnknownModelError, InputShapeError...), and a plain
  ``ValueError`` raised by this package's own argument checks;
- a missing optional package (:class:`~scunext.errors.MissingDependencyError`, or an ImportError of one of the
  optional extras' modules);
- an ``OSError`` about a path or the machine (file not found, is a folder, permission denied, disk full, port in
  use).

A ``KeyError``, ``TypeError``, an ``ImportError`` of anything else or a ``ValueError`` raised inside numpy, torch
or Pillow is not one of these: hiding it would hide a bug.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from scunext import __version__
from scunext.errors import MAX_MESSAGE, UsageError, missing_dependency

__all__ = ["main", "build_parser", "CLIError", "user_error_exit_code"]

log = logging.getLogger("scunext")

#: sub-command modules (under scunext.cli); each has ``add_parser(subparsers)`` which sets ``func`` to a
#: ``run(args) -> int``. Imported inside :func:`main` (they import torch: ~3 s), so that Ctrl+C or SIGTERM during
#: start-up is the one-line "interrupted"/"terminated" too, not a traceback from the middle of an import.
COMMANDS = ["train", "evaluate", "predict", "experiment", "profile", "benchmark", "serve", "export", "weights",
            "robustness"]  # fmt: skip

CLIError = UsageError  # the name sub-commands used before scunext.errors existed

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)
_MACHINE_ERRNOS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                   errno.EFBIG}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``scunext CMD: error: MESSAGE``) instead of usage text + error, and no
    abbreviated flags (``--model`` must not silently mean ``--models``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scunext", description="Fast, lightweight 2D medical image segmentation (UNeXt, SC-UNeXt, baselines)."
    )
    parser.add_argument("--version", action="version", version=f"scunext {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"scunext.cli.{name}").add_parser(sub)
    return parser


def _raised_here(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by this package's own code (its innermost frame is in the package)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)


def _training_error() -> type[BaseException]:
    from scunext.engine.trainer import TrainingError

    return TrainingError


def user_error_exit_code(exc: BaseException) -> int | None:
    """The exit code of an exception that is a user's (or the run's) problem, reported in one line; None for a bug."""
    if isinstance(exc, _training_error()):
        return 1
    if isinstance(exc, UsageError):
        return 2
    if isinstance(exc, ImportError):
        return 2 if missing_dependency(exc) is not None else None
    if isinstance(exc, ValueError):
        typed = type(exc).__module__.split(".")[0] == "scunext"
        return 2 if typed or (type(exc) is ValueError and _raised_here(exc)) else None
    if isinstance(exc, (*_PATH_ERRORS, socket.gaierror)):
        return 2
    if isinstance(exc, OSError) and (exc.filename is not None or exc.errno in _MACHINE_ERRNOS):
        return 2
    return None


def _message(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        exc = missing_dependency(exc) or exc
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) > MAX_MESSAGE:  # a value echoed whole (library code cuts what it echoes: errors.shown)
        line = f"{line[:MAX_MESSAGE]} ... (message cut at {MAX_MESSAGE:,} of {len(line):,} characters)"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    previous = _stop_on_sigterm()
    try:
        return _run(argv)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`| head`): nobody is left to tell
        from scunext.cli.output import silence

        silence(sys.stdout)
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()  # imports the sub-commands (and torch): inside main's Ctrl+C / SIGTERM handling
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser, so that the message names the command
        command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if isinstance(getattr(args, "device", None), str):  # an unavailable --device: one line before any work
            from scunext.engine.distributed import resolve_device

            resolve_device(args.device)
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise  # main's: exit 141 quietly
    except Exception as exc:
        code = user_error_exit_code(exc)
        if code is None:
            raise  # a bug: show the traceback (exit code 1)
        if args.verbose:
            log.exception("failed")
        print(f"scunext {args.command}: error: {_message(exc)}", file=sys.stderr)
        return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler, a container stop) raised in the main thread, so that it unwinds like
    Ctrl+C: temporary files are removed and run folders are left as after any crash, then exit code 143."""


def _raise_terminated(signum, frame) -> NoReturn:
    raise Terminated()


def _stop_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` while a command runs; returns the handler to restore (None: left as it
    was, because this is not the main thread or a program around us already handles SIGTERM)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
