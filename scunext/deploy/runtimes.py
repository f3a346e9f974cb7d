"""Inference runtimes (``--engine``): the same model run by eager PyTorch or by other runtimes.

A runtime is built once from an eval-mode model and then called like the model: ``runner(x) -> logits`` with
``x`` a float32 ``(B, C, H, W)`` CPU tensor and the logits a float32 ``(B, num_classes, H, W)`` tensor. The
measurements behind every choice below are in ``docs/deployment.md``.

``torch``
    Eager PyTorch fp32, the reference.
``torch-fused``
    Eager PyTorch on a copy with every conv-BN pair folded (:func:`scunext.deploy.fuse.fuse_for_inference`), weights and
    input in ``channels_last`` memory format (measured faster than NCHW for UNeXt-S and SC-UNeXt on CPU: PyTorch's
    NCHW max-pool and bilinear upsampling kernels are slow at these small widths).
``onnxruntime``
    The BN-folded model exported to ONNX in memory (TorchScript exporter, dynamic batch/H/W) and run by an
    onnxruntime CPU session with all graph optimisations, sequential execution and ``threads`` intra-op threads.
    The fastest engine. Building it takes about a second (the export). Inputs must have H, W multiples of the
    model's ``input_divisor`` and at least :func:`scunext.deploy.onnx_export.min_onnx_side` (64 for the UNeXt family).
``onnxruntime-int8``
    As ``onnxruntime`` after static int8 quantization (QDQ, per-channel weights,
    :func:`scunext.deploy.int8.quantize_int8`) calibrated on ``calibration`` images. Offered because it stays within
    0.5 Dice points of fp32 on a real test set (SC-UNeXt, chest X-rays); it is *not* faster than ``onnxruntime``
    at batch 1 on the CPUs measured.

``onnxruntime`` engines need ``pip install scunext[onnx]``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["ENGINES", "make_runner"]

#: engine names accepted by :func:`make_runner`
ENGINES = ("torch", "torch-fused", "onnxruntime", "onnxruntime-int8")

Runner = Callable[[torch.Tensor], torch.Tensor]


def _eager(model: nn.Module) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def _fused(model: nn.Module) -> Runner:
    from scunext.deploy.fuse import fuse_for_inference

    fused = fuse_for_inference(model).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fused(x.contiguous(memory_format=torch.channels_last)).contiguous()

    return run


def _onnxruntime(
    model: nn.Module, threads: int | None, int8: bool, calibration: Sequence[np.ndarray | torch.Tensor] | None
) -> Runner:
    from scunext.deploy.int8 import quantize_int8
    from scunext.deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, make_session, min_onnx_side, onnx_bytes, require
    from scunext.deploy.onnx_export import sample_inputs as _samples

    for package in ("onnx", "onnxruntime"):  # before the export, whose own error (torch's) is not an ImportError
        require(package)
    in_channels = getattr(model, "in_channels", None)
    if in_channels is None:
        raise ValueError(f"onnxruntime engines need a scunext model (with in_channels), got {type(model).__name__}")
    low = min_onnx_side(model)
    graph = onnx_bytes(model, in_channels=in_channels, size=max(256, low))
    if int8:
        images = list(calibration) if calibration is not None else _samples(in_channels, 256)
        with tempfile.TemporaryDirectory(prefix="scunext-int8-") as tmp:
            fp32 = Path(tmp) / "model.onnx"
            fp32.write_bytes(graph)
            graph = quantize_int8(fp32, Path(tmp) / "model-int8.onnx", images).read_bytes()
    session = make_session(graph, threads)
    check = getattr(model, "check_input", None)

    def run(x: torch.Tensor) -> torch.Tensor:
        if check is not None:
            check(x)  # the graph itself does not validate shapes
        if min(x.shape[2:]) < low:
            raise ValueError(f"onnxruntime engines need H and W >= {low} for {type(model).__name__}, got "
                             f"{x.shape[2]}x{x.shape[3]}; use engine 'torch' for smaller inputs")  # fmt: skip
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out)

    return run


def make_runner(
    model: nn.Module,
    engine: str = "torch",
    *,
    threads: int | None = None,
    calibration: Sequence[np.ndarray | torch.Tensor] | None = None,
) -> Runner:
    """A callable that runs ``model`` (eval mode, no autograd) with ``engine``.

    Args:
        model: the network; ``torch`` runs it as it is (switched to eval mode); the other engines work on a copy
            and never modify it (its train/eval mode included).
        engine: one of :data:`ENGINES`.
        threads: intra-op threads of the onnxruntime engines (default: ``torch.get_num_threads()``); the PyTorch
            engines use PyTorch's own setting (``torch.set_num_threads``).
        calibration: ``onnxruntime-int8`` only: preprocessed images (float32 ``(C, H, W)``, e.g. from
            :meth:`~scunext.deploy.predictor.Predictor.prepare`) of the model's training distribution to calibrate the
            activation ranges on. Default: the shipped sample images of the model's modality at 256x256
            (:func:`scunext.deploy.onnx_export.sample_inputs`).

    Returns:
        ``runner(x: float32 (B, C, H, W) tensor) -> float32 logits tensor``.

    Raises:
        ValueError: unknown engine (the message lists the valid ones), bad ``threads``, ``calibration`` given to
            another engine, or a model the engine cannot run.
        ImportError: ``onnx`` / ``onnxruntime`` missing for the onnxruntime engines.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if calibration is not None and engine != "onnxruntime-int8":
        raise ValueError(f"calibration images are used by engine 'onnxruntime-int8' only, not {engine!r}")
    if engine == "torch":
        return _eager(model.eval())
    from scunext.deploy.modes import eval_mode

    with eval_mode(model):  # the others build from the eval-mode model and hand the caller's back as it was
        if engine == "torch-fused":
            return _fused(model)
        return _onnxruntime(model, threads, engine == "onnxruntime-int8", calibration)
