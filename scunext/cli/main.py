"""``scunext`` command line: parses arguments and calls library functions; user mistakes become one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from scunext import __version__
from scunext.cli import benchmark, evaluate, experiment, export, predict, profile, serve, train, weights

__all__ = ["main", "build_parser", "CLIError"]

log = logging.getLogger("scunext")

#: sub-command modules; each has ``add_parser(subparsers)`` which sets ``func`` to a ``run(args) -> int``.
COMMANDS = [train, evaluate, predict, experiment, profile, benchmark, serve, export, weights]


class CLIError(Exception):
    """A user mistake detected by the CLI itself (bad flag combination, missing path...)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scunext", description="Fast, lightweight 2D medical image segmentation (UNeXt, SC-UNeXt, baselines)."
    )
    parser.add_argument("--version", action="version", version=f"scunext {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the user asked for something invalid', reported without a traceback."""
    return (CLIError, ValueError, FileNotFoundError, NotADirectoryError, KeyError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except RuntimeError as exc:  # a TrainingError (non-finite loss): the run failed on its own, exit 1
        trainer = sys.modules.get("scunext.engine.trainer")  # loaded whenever one was raised; not imported here
        if trainer is None or not isinstance(exc, trainer.TrainingError):
            raise
        print(f"scunext {args.command}: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except _user_errors() as exc:
        if args.verbose:
            log.exception("failed")
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"scunext {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
