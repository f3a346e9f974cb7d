"""The models offered by ``scunext serve``: one :class:`ServedModel` per run folder or released weights."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scunext.deploy.predictor import Predictor

__all__ = ["ServedModel", "load_models"]


@dataclass
class ServedModel:
    """One model offered by the page.

    Attributes:
        id: short identifier used by the API (``"0"``, ``"1"``, ...); never a path.
        label: what the page shows, e.g. ``"sc_unext (demo)"``.
        predictor: the :class:`~scunext.deploy.predictor.Predictor` that segments (the same as ``scunext predict``).
        source: where the weights came from, for the log (a run folder; later, a released weights name).
    """

    id: str
    label: str
    predictor: Predictor
    source: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> dict[str, Any]:
        """The public description returned by ``GET /api/models`` (no server paths)."""
        p = self.predictor
        return {
            "id": self.id,
            "label": self.label,
            "model": p.name,
            "in_channels": p.in_channels,
            "size": p.size,
            "engine": p.engine,
        }


def load_models(
    run_dirs: Sequence[str | Path],
    *,
    checkpoint: str = "best",
    device: str = "cpu",
    engine: str = "torch",
    warmup: bool = True,
    quality_file: str | Path | None = None,
) -> list[ServedModel]:
    """One :class:`ServedModel` per training run folder, labelled ``"MODEL (RUN_FOLDER_NAME)"``.

    Released weights (a future ``--weights NAME``) are meant to be added to this list the same way, as further
    :class:`ServedModel` entries built from their own :class:`~scunext.deploy.predictor.Predictor`.

    Args:
        run_dirs: training run folders.
        checkpoint: ``"best"`` or ``"last"``.
        device: where the models run.
        engine: inference engine (:data:`scunext.deploy.runtimes.ENGINES`).
        warmup: run each model once on a blank image, so that the first reported inference time is not inflated
            by one-off start-up costs.
        quality_file: a quality calibration for the only model, instead of its run's own ``quality.json``
            (refused when made for other weights).

    Raises:
        CheckpointError: a folder is missing or has no such checkpoint.
        ValueError: an unknown engine, or an engine that cannot run on ``device``.
    """
    if quality_file is not None and len(run_dirs) != 1:
        raise ValueError("a quality file applies to one model: serve exactly one with it")
    models: list[ServedModel] = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        predictor = Predictor.from_run(run_dir, checkpoint, device=device, engine=engine, quality_file=quality_file)
        label = f"{predictor.name} ({run_dir.resolve().name})"
        if warmup:
            predictor.predict([np.zeros((predictor.size, predictor.size, 3), np.uint8)])
        models.append(ServedModel(str(len(models)), label, predictor, source=str(run_dir)))
    labels = [m.label for m in models]
    for m in models:  # two runs with the same folder name: keep the labels apart
        if labels.count(m.label) > 1:
            m.label = f"{m.label} #{int(m.id) + 1}"
    return models
