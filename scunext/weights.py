"""Released weights shipped inside the package: each is a minimal run folder under ``assets/weights/NAME/``.

A release holds ``best.safetensors`` + ``best.json`` (the checkpoint), the run's ``config.yaml`` and ``split.json``
(which images were trained on and which were held out) and ``card.json`` (data, split, epochs, test metrics, the
command that trained it, licence). Because a release *is* a run folder, everything that takes ``RUN_DIR`` also
takes ``--weights NAME``. The cards are listed by ``scunext weights``; docs/results.md tells how each was made.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["WEIGHTS_DIR", "UnknownWeightsError", "list_weights", "weights_dir", "weights_card"]

WEIGHTS_DIR = Path(__file__).parent / "assets" / "weights"


class UnknownWeightsError(KeyError, ValueError):
    """No released weights of that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def list_weights() -> list[str]:
    """Names of the released weights, sorted."""
    return list(_released())


@lru_cache(maxsize=1)
def _released() -> tuple[str, ...]:  # package data: listed once per process (the CLI asks for it at start-up)
    if not WEIGHTS_DIR.is_dir():
        return ()
    from scunext.runs import RunDir  # the layout's owner; imported here to keep `import scunext.weights` light

    return tuple(sorted(p.name for p in WEIGHTS_DIR.iterdir() if RunDir(p).card_file.is_file()))


def weights_dir(name: str) -> Path:
    """The run folder of released weights ``name``; :class:`UnknownWeightsError` lists the valid names."""
    names = list_weights()
    if name not in names:
        raise UnknownWeightsError(f"no released weights named {name!r}; available: {', '.join(names) or 'none'}")
    return WEIGHTS_DIR / name


def released_name(path: str | Path) -> str | None:
    """The name of the released weights whose folder ``path`` is (or lies in), else None: those folders are part of
    the installed package, which no command writes into (an update or reinstall would replace or lose the file)."""
    try:
        rel = Path(path).resolve().relative_to(WEIGHTS_DIR.resolve())
    except (OSError, ValueError):
        return None
    return rel.parts[0] if rel.parts else "(all)"


def weights_card(name: str) -> dict[str, Any]:
    """The card (``card.json``) of released weights ``name``."""
    from scunext.runs import RunDir

    return json.loads(RunDir(weights_dir(name)).card_file.read_text())
