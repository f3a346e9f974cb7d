"""Checks of output paths given on the command line, made before any work so that a mistake costs nothing and no
user file is overwritten."""

from __future__ import annotations

import argparse
from pathlib import Path

from scunext.errors import UsageError

#: longest output file name accepted: 255 bytes (the usual file-system limit) less room for a temporary suffix
MAX_NAME_BYTES = 240

__all__ = ["Once", "out_arg", "check_out_file", "check_out_folder", "check_not_in_package", "check_not_run_file"]


class Once(argparse.Action):
    """An option that takes one value: given twice with different values it is an error, not "the last one wins"
    (``--weights lungs --weights isic2017`` must not quietly segment a chest X-ray with the skin model, ``--out a
    --out b`` not quietly write to b)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None and before != values:
            parser.error(f"{option_string} given twice ({before}, {values}); give one")
        setattr(namespace, self.dest, values)


def out_arg(text: str | None, flag: str = "--out") -> Path | None:
    """The path given with ``flag`` (None when it was not given). An empty one (``--out "$UNSET"``) is refused: as a
    Path it would be the current folder, and treated as absent it would silently mean the default."""
    if text is None:
        return None
    if not text.strip():
        raise UsageError(f"{flag} is empty; give a path")
    return Path(text)


def check_out_file(path: Path, *, overwrite: bool = False, flag: str = "--out", example: str = "model.onnx") -> Path:
    """``path`` as an output file: not a folder, and not an existing file unless ``overwrite``."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name, e.g. {path / example}")
    if path.exists() and not path.is_file():  # a device, pipe or socket: --overwrite would replace the node itself
        raise UsageError(f"{flag} {path} is not a regular file (a device, pipe or socket); choose another {flag}")
    if path.exists() and not overwrite:
        raise UsageError(f"{flag} {path} exists; pass --overwrite to replace it, or choose another {flag}")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: {path.parent} is a file, not a folder")
    if len(path.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UsageError(f"{flag}: file name of {len(path.name.encode('utf-8', 'surrogateescape'))} bytes, above the "
                         f"{MAX_NAME_BYTES} a file system allows (with room for a temporary name); choose a shorter "
                         "one")  # fmt: skip
    return path


def check_not_run_file(path: Path, run_dir: str | Path, *, own: str, flag: str = "--out") -> None:
    """Refuse an output that is one of the files of the run folder the command reads (its weights, config, split,
    card, calibration; :meth:`RunDir.holds`), even with --overwrite: ``export RUN --out RUN/best.safetensors
    --overwrite`` replaced the run's weights by the ONNX graph. ``own`` is the file name the command itself writes
    there by default (``model.onnx``, ``quality.json``), which stays allowed."""
    from scunext.runs import RunDir

    run = RunDir(run_dir)
    if path.name != own or path.parent.resolve() != run.path.resolve():
        if run.holds(path):
            raise UsageError(f"{flag} {path} is a file of the run folder {run_dir} that this command reads; choose "
                             "another --out (it would be replaced even with --overwrite)")  # fmt: skip


def check_out_folder(path: Path, *, flag: str = "--out") -> Path:
    """``path`` as an output folder: missing (it will be created) or a folder, never an existing file."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; give a folder for the outputs")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    return path


def check_not_in_package(run_dir: str | Path, default: str, *, flag: str = "--out") -> None:
    """Refuse a default output inside released weights (``scunext evaluate src/scunext/assets/weights/lungs``
    wrote its report into the installed package, ``calibrate`` would have replaced the shipped quality.json):
    ``default`` names what would have been written there."""
    from scunext.weights import released_name

    name = released_name(run_dir)
    if name is not None:
        raise UsageError(f"{run_dir} is the released weights {name!r}, part of the installed package, which scunext "
                         f"does not write into (the default {default}); give {flag}")
