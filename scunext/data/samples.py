"""Small samples of the two datasets shipped inside the package (``scunext/assets/samples/``).

``isic2017`` (30 dermoscopy pairs with the official split in ``splits.csv``) and ``chest-xray-lungs`` (30 chest
X-ray pairs, Montgomery + Shenzhen). They are for tests, examples and smoke runs, not for training or evaluation.
Their licences are **non-commercial research use only** (see each folder's ``SOURCE.md``), unlike the MIT-licensed
code.
"""

from __future__ import annotations

import os
from pathlib import Path

from scunext.checksum import sha256_file
from scunext.data.errors import DataError

__all__ = ["SAMPLE_NAMES", "list_samples", "sample_dir", "verify_checksums"]

SAMPLE_NAMES: tuple[str, ...] = ("chest-xray-lungs", "isic2017")
"""Names accepted by :func:`sample_dir`."""

_SAMPLES_ROOT = Path(__file__).resolve().parent.parent / "assets" / "samples"


def list_samples() -> list[str]:
    """Names of the shipped samples, sorted."""
    return sorted(SAMPLE_NAMES)


def sample_dir(name: str) -> Path:
    """Folder of a shipped sample (with ``images/``, ``masks/``, ``SOURCE.md``, ``SHA256SUMS``).

    Args:
        name: ``"isic2017"`` or ``"chest-xray-lungs"``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        DataError: the sample folder is missing from the installation.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}; available: {', '.join(list_samples())}")
    path = _SAMPLES_ROOT / name
    if not path.is_dir():
        raise DataError(f"{path}: shipped sample {name!r} is missing from this installation")
    return path


def verify_checksums(folder: str | os.PathLike[str]) -> int:
    """Check every file listed in ``folder/SHA256SUMS`` (``sha256sum`` format); returns how many were checked.

    Raises:
        DataError: no or malformed ``SHA256SUMS``, a listed file missing, or a checksum mismatch.
    """
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise DataError(f"{sums}: checksum file not found")
    checked = 0
    for n, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(f"{sums}: line {n} is not '<sha256>  <path>'")
        target = folder / rel.strip()
        if not target.is_file():
            raise DataError(f"{target}: listed in {sums.name} but missing")
        if sha256_file(target) != digest.lower():
            raise DataError(f"{target}: sha256 does not match {sums.name} (file changed or corrupt)")
        checked += 1
    return checked
