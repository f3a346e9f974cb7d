"""Inference: a trained model -> masks at each input's native resolution."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scunext.data.preprocess import preprocess
from scunext.deploy.runtimes import make_runner
from scunext.runs import CheckpointError, RunDir, load_model

__all__ = ["Predictor", "checkpoint_stem"]

log = logging.getLogger(__name__)


def checkpoint_stem(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """Path stem of ``best`` / ``last`` in a run folder (:meth:`RunDir.checkpoint_stem`)."""
    return RunDir(run_dir).checkpoint_stem(checkpoint)


@dataclass
class Predictor:
    """Wraps a model with the preprocessing it was trained with.

    Attributes:
        model: the network (eval mode).
        in_channels: channels the model expects (images are converted).
        size: side the model was trained at (images are resized to ``size x size``, logits resized back).
        threshold: probability threshold for the foreground.
        name: model name, for reports.
    """

    model: nn.Module
    in_channels: int
    size: int
    threshold: float = 0.5
    name: str = ""
    device: torch.device = torch.device("cpu")
    engine: str = "torch"

    def __post_init__(self) -> None:
        self.model = self.model.eval()
        self._runner = make_runner(self.model, self.engine) if self.device.type == "cpu" else None

    @classmethod
    def from_checkpoint(
        cls, stem: str | Path, device: str | torch.device = "cpu", engine: str = "torch"
    ) -> Predictor:
        model, meta = load_model(stem)
        return cls._build(model, meta, int((meta.get("config") or {}).get("size", 256)), device, engine)

    @classmethod
    def _build(cls, model: nn.Module, meta: dict, size: int, device: str | torch.device, engine: str) -> Predictor:
        in_ch = int(meta["model_args"].get("in_channels", 3))
        dev = torch.device(device)
        if engine != "torch" and dev.type != "cpu":
            raise ValueError(f"engine {engine!r} runs on the CPU; use --device cpu or --engine torch")
        return cls(model.to(dev), in_ch, size, name=meta["model"], device=dev, engine=engine)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu", engine: str = "torch"
    ) -> Predictor:
        """The run's checkpoint, refused when it is not the run's own model (:meth:`RunDir.load_model`)."""
        run = RunDir(run_dir)
        run.checkpoint_stem(checkpoint)  # "no best checkpoint" before "no config.yaml": the likelier mistake
        cfg = run.load_config()
        model, meta = run.load_model(checkpoint, cfg)
        return cls._build(model, meta, cfg.size, device, engine)

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8 image (any channels) -> normalised ``(C, size, size)`` tensor, exactly as in training."""
        return preprocess(image, self.in_channels, self.size)

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Foreground probability maps, each at its image's native ``(H, W)``."""
        out: list[np.ndarray] = []
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            x = torch.stack([self.prepare(im) for im in chunk]).to(self.device)
            logits = (self._runner(x) if self._runner is not None else self.model(x)).float()
            if not bool(torch.isfinite(logits).all()):
                raise CheckpointError(f"model {self.name or ''} gives NaN/inf logits; its checkpoint is unusable "
                                      "(a diverged training run?); use another checkpoint or retrain")  # fmt: skip
            for im, lg in zip(chunk, logits):
                h, w = im.shape[:2]
                up = F.interpolate(lg[None, :1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
                out.append(torch.sigmoid(up).cpu().numpy())
        return out

    def predict(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Boolean masks (probability > threshold), each at its image's native ``(H, W)``."""
        return [p > self.threshold for p in self.probabilities(images, batch_size)]
