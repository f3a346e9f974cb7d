"""Inference: a trained model -> masks at each input's native resolution."""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scunext.data.intensity import DESCRIPTIONS as INTENSITY_DESCRIPTIONS
from scunext.data.preprocess import preprocess
from scunext.deploy.quality import Quality, QualityCalibration, assess, load_calibration
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
        intensity: the run's intensity step (``none``, ``percentile``, ``clahe``; :mod:`scunext.data.intensity`).
        quality: the run's quality calibration (``quality.json``, else the documented default;
            :mod:`scunext.deploy.quality`), used by :meth:`assess`.
    """

    model: nn.Module
    in_channels: int
    size: int
    threshold: float = 0.5
    name: str = ""
    device: torch.device = torch.device("cpu")
    engine: str = "torch"
    intensity: str = "none"
    quality: QualityCalibration | None = None

    def __post_init__(self) -> None:
        self.model = self.model.eval()
        self._runner = None
        if self.device.type == "cpu":
            calibration = None
            if self.engine == "onnxruntime-int8":  # calibrated on what it will see: its size, its intensity step
                from scunext.deploy.onnx_export import sample_inputs

                calibration = sample_inputs(self.in_channels, self.size, intensity=self.intensity)
            self._runner = make_runner(self.model, self.engine, calibration=calibration)

    @classmethod
    def from_checkpoint(
        cls, stem: str | Path, device: str | torch.device = "cpu", engine: str = "torch"
    ) -> Predictor:
        model, meta = load_model(stem)
        cfg = meta.get("config") or {}
        return cls._build(model, meta, int(cfg.get("size", 256)), device, engine, str(cfg.get("intensity", "none")))

    @classmethod
    def _build(cls, model: nn.Module, meta: dict, size: int, device: str | torch.device, engine: str,
               intensity: str = "none") -> Predictor:  # fmt: skip
        in_ch = int(meta["model_args"].get("in_channels", 3))
        dev = torch.device(device)
        if engine != "torch" and dev.type != "cpu":
            raise ValueError(f"engine {engine!r} runs on the CPU; use --device cpu or --engine torch")
        return cls(model.to(dev), in_ch, size, name=meta["model"], device=dev, engine=engine, intensity=intensity)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu", engine: str = "torch",
        *, quality_file: str | Path | None = None, calibrated: bool = True,
    ) -> Predictor:  # fmt: skip
        """The run's checkpoint, refused when it is not the run's own model (:meth:`RunDir.load_model`), with its
        quality calibration: ``quality_file`` if given, else the run's own ``quality.json``, each refused when made
        for other weights (:func:`~scunext.deploy.quality.load_calibration`); ``calibrated=False``: the default
        calibration, no file read (``scunext calibrate`` replacing the run's file)."""
        run = RunDir(run_dir)
        run.checkpoint_stem(checkpoint)  # "no best checkpoint" before "no config.yaml": the likelier mistake
        cfg = run.load_config()
        model, meta = run.load_model(checkpoint, cfg)
        pred = cls._build(model, meta, cfg.size, device, engine, cfg.intensity)
        default = QualityCalibration.default()
        pred.quality = load_calibration(run_dir, checkpoint, quality_file) if calibrated else default
        return pred

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8 image (any channels) -> normalised ``(C, size, size)`` tensor, exactly as in training."""
        return preprocess(image, self.in_channels, self.size, self.intensity)

    def preprocessing(self) -> dict[str, Any]:
        """What :meth:`prepare` does, as plain data (stored in exported ONNX files, docs/deployment.md)."""
        return {
            "in_channels": self.in_channels,
            "size": self.size,
            "channels": "gray -> 3: repeat; RGB -> 1: ITU-R 601-2 luma (Pillow convert('L'))",
            "resize": "area average (Pillow BOX) when shrinking both sides, else bilinear; to size x size",
            "intensity": self.intensity,
            "intensity_step": INTENSITY_DESCRIPTIONS[self.intensity],
            "normalise": "x = (uint8 / 255 - 0.5) / 0.5, channels first",
            "output": "logits; foreground where sigmoid(logit) > threshold",
            "threshold": float(self.threshold),
            "model": self.name,
        }  # fmt: skip

    @property
    def threshold_logit(self) -> float:
        """The logit of :attr:`threshold`: ``sigmoid(z) > threshold`` exactly when ``z > threshold_logit``, so masks
        are thresholded on the logits and no sigmoid is computed at full size."""
        t = float(self.threshold)
        if not 0 < t < 1:
            raise ValueError(f"threshold must be in (0, 1), got {t}")
        return math.log(t / (1 - t))

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground logits ``(B, 1, size, size)`` (float32, CPU) of a batch of prepared images
        ``(B, C, size, size)`` (:meth:`prepare`)."""
        if not bool(torch.isfinite(x).all()):  # not the weights' fault: say so before the logits check blames them
            raise ValueError("the input holds NaN or inf values; prepare images with Predictor.prepare")
        x = x.to(self.device)
        out = (self._runner(x) if self._runner is not None else self.model(x)).float()[:, :1]
        if not bool(torch.isfinite(out).all()):
            raise CheckpointError(f"model {self.name or ''} gives NaN/inf logits; its checkpoint is unusable "
                                  "(a diverged training run?); use another checkpoint or retrain")  # fmt: skip
        return out.cpu()

    @torch.inference_mode()
    def upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """One image's logits ``(1, h, w)`` (from :meth:`logits`) bilinearly resized to ``size = (H, W)``:
        ``(H, W)`` float32."""
        return F.interpolate(logits[None, :1].float(), size=size, mode="bilinear", align_corners=False)[0, 0]

    def mask_from_logits(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Boolean mask at ``size = (H, W)`` of one image's low-resolution logits ``(1, h, w)``: bilinear
        upsampling of the logits, then ``> threshold_logit`` (the same mask as thresholding the probabilities)."""
        with torch.inference_mode():
            return (self.upsample(logits, size) > self.threshold_logit).numpy()

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Foreground probability maps, each at its image's native ``(H, W)``."""
        _check_batch_size(batch_size)
        out: list[np.ndarray] = []
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            logits = self.logits(torch.stack([self.prepare(im) for im in chunk]))
            for im, lg in zip(chunk, logits):
                out.append(torch.sigmoid(self.upsample(lg, im.shape[:2])).numpy())
        return out

    def predict(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Boolean masks (probability > threshold), each at its image's native ``(H, W)``."""
        _check_batch_size(batch_size)
        out: list[np.ndarray] = []
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            logits = self.logits(torch.stack([self.prepare(im) for im in chunk]))
            out.extend(self.mask_from_logits(lg, im.shape[:2]) for im, lg in zip(chunk, logits))
        return out

    def assess(self, images: list[np.ndarray], probs: list[np.ndarray] | None = None,
               batch_size: int = 8) -> list[Quality]:  # fmt: skip
        """Quality score and ``review`` flag of each image's mask (:func:`scunext.deploy.quality.assess`); pass the
        ``probs`` from :meth:`probabilities` to avoid computing them twice (one extra flipped pass per image)."""
        _check_batch_size(batch_size)
        return assess(self, images, self.quality, probs, batch_size)


def _check_batch_size(batch_size: int) -> None:
    try:
        n = operator.index(batch_size)  # int or numpy integer; not 2.5
    except TypeError:
        n = 0
    if isinstance(batch_size, bool) or n < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r} ({type(batch_size).__name__})")
