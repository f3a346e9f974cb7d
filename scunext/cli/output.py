"""What the command line prints: lines that survive a reader that went away (``| head``) and file names that are
not UTF-8."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from scunext.deploy.stream import printable

__all__ = ["Echo", "silence"]


class Echo:
    """Per-image lines and the summary, printed above the progress bar. A reader that goes away (``| head``) or a
    terminal that cannot show a file name never stops the run: the masks and the table are the product, the lines
    only a view of them. Names that are not UTF-8 are shown with ``\\xNN`` escapes (:func:`printable`)."""

    def __init__(self) -> None:
        self.closed: set[int] = set()

    def __call__(self, text: str, file=None) -> None:
        file = file or sys.stdout
        if id(file) in self.closed:
            return
        try:
            tqdm.write(printable(text), file=file)
            file.flush()
        except BrokenPipeError:
            self.closed.add(id(file))
            silence(file)


def silence(stream) -> None:
    """Point a stream whose reader went away at /dev/null, so that the interpreter's flush at exit raises nothing."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
