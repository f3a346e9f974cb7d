"""ONNX export checked against eager PyTorch.

* :func:`export_onnx` writes a BN-folded eval model to ONNX (input ``image``, output ``logits``, dynamic batch and
  spatial axes) with the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) and validates it with
  ``onnx.checker``. The dynamo exporter (``exporter="dynamo"``, opset >= 18) gives an equally exact graph that runs
  equally fast under onnxruntime and also accepts the smallest inputs, but takes ~25x longer to export (about 20 s
  instead of under one for UNeXt-S), which the ``onnxruntime`` runtime would pay each time it is built;
  ``docs/deployment.md`` has the measurements.
* :func:`check_onnx` measures the largest logit difference between onnxruntime and eager PyTorch.
* :func:`sample_inputs` gives real shipped images, preprocessed as for inference, for parity checks and calibration.

Limit of the TorchScript graph: UNeXt's token shift clamps its offset to the feature size (``min(|offset|, n)``),
and a trace records the clamp's value at the export size. The graph is therefore exact only while the deepest
token map is at least ``shift_size // 2`` pixels wide, i.e. for H, W >= :func:`min_onnx_side` (64 for the UNeXt
family); export refuses smaller trace sizes and the ``onnxruntime`` runtime refuses smaller inputs with a clear error.

``onnx``, ``onnxruntime`` and ``onnxscript`` are optional (``pip install scunext[onnx]``); they are imported when
needed.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scunext.deploy.fuse import fuse_for_inference
from scunext.deploy.modes import eval_mode
from scunext.errors import MissingDependencyError

__all__ = ["EXPORTERS", "INPUT_NAME", "OUTPUT_NAME", "SAMPLE_FOR_CHANNELS", "min_onnx_side", "export_onnx",
           "onnx_bytes", "make_session", "check_onnx", "sample_inputs", "require"]  # fmt: skip

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: ONNX exporters accepted by :func:`export_onnx`; the first is the default.
EXPORTERS = ("torchscript", "dynamo")

#: shipped sample (:func:`scunext.data.sample_dir`) of real images for a model's number of input channels
SAMPLE_FOR_CHANNELS = {3: "isic2017", 1: "chest-xray-lungs"}


def require(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        msg = f"{module} is not installed; install the ONNX extras: pip install 'scunext[onnx]'"
        raise MissingDependencyError(msg) from None



def min_onnx_side(model: nn.Module) -> int:
    """Smallest H and W for which a TorchScript-exported graph of ``model`` is exact (see the module docstring).

    ``input_divisor * max(1, shift_size // 2)`` for models with UNeXt token shifts (64 for the UNeXt family),
    ``input_divisor`` otherwise.
    """
    from scunext.models.layers.shift_mlp import ShiftedMLP

    divisor = int(getattr(model, "input_divisor", 1))
    shifts = [m.shift_size // 2 for m in model.modules() if isinstance(m, ShiftedMLP)]
    return divisor * max([1, *shifts])


def _check_export_args(model: nn.Module, in_channels: int, size: int, opset: int, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; available: {', '.join(EXPORTERS)}")
    if exporter == "dynamo" and opset < 18:
        # it writes opset 18 and cannot convert this graph down (no Pad adapter); refuse rather than mislabel
        raise ValueError(f"the dynamo exporter needs opset >= 18, got {opset}")
    model_ch = getattr(model, "in_channels", in_channels)
    if in_channels != model_ch:
        raise ValueError(f"in_channels={in_channels} but the model was built for {model_ch} channels")
    divisor = int(getattr(model, "input_divisor", 1))
    low = min_onnx_side(model) if exporter == "torchscript" else divisor
    if size < low or size % divisor:
        raise ValueError(f"size must be a multiple of {divisor} and at least {low} for this model, got {size}")


def _export_to(
    model: nn.Module, f: str | Path | io.BytesIO, in_channels: int, size: int, dynamic: bool, opset: int, exporter: str
) -> None:
    fused = fuse_for_inference(model).cpu().float()
    if exporter == "dynamo":
        # batch 2: torch.export specialises a dimension whose example size is 1
        example = torch.randn(2, in_channels, size, size)
        shapes = None
        if dynamic:
            d = int(getattr(model, "input_divisor", 1))
            batch, h, w = torch.export.Dim("batch"), torch.export.Dim("h"), torch.export.Dim("w")
            shapes = ({0: batch, 2: d * h, 3: d * w},)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                fused, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamic_shapes=shapes, dynamo=True, verbose=False,
            )  # fmt: skip
        if isinstance(f, io.BytesIO):
            f.write(program.model_proto.SerializeToString())
        else:
            program.save(str(f))
        return
    example = torch.randn(1, in_channels, size, size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # the legacy-exporter deprecation notice, and the TracerWarning for the token shift's clamp, which
        # min_onnx_side() covers
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fused, (example,), f, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None, do_constant_folding=True,
            dynamo=False,
        )  # fmt: skip


def onnx_bytes(
    model: nn.Module, *, in_channels: int, size: int = 256, dynamic: bool = True, opset: int = 17,
    exporter: str = "torchscript",
) -> bytes:  # fmt: skip
    """The ONNX model :func:`export_onnx` would write, as bytes (for an in-memory onnxruntime session)."""
    _check_export_args(model, in_channels, size, opset, exporter)
    buf = io.BytesIO()
    _export_to(model, buf, in_channels, size, dynamic, opset, exporter)
    return buf.getvalue()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    in_channels: int,
    size: int = 256,
    dynamic: bool = True,
    opset: int = 17,
    exporter: str = "torchscript",
) -> Path:
    """Export ``model`` (eval mode, BatchNorm folded) to ONNX and validate the file with ``onnx.checker``.

    The graph maps input ``image`` ``(B, in_channels, H, W)`` float32 to output ``logits`` ``(B, num_classes, H, W)``.
    The models skip :meth:`~scunext.models.base.SegmentationModel.check_input` while being exported, so the graph
    itself does not validate shapes: feed it H and W that are multiples of the model's ``input_divisor`` (and, for
    a TorchScript export, at least :func:`min_onnx_side`).

    Args:
        model: the network; it is not modified.
        path: output ``.onnx`` file (parent folders are created).
        in_channels: image channels (must match the model's).
        size: side of the example input the graph is traced at.
        dynamic: dynamic batch, height and width axes (otherwise fixed at ``1 x size x size``).
        opset: ONNX opset version (the dynamo exporter needs >= 18).
        exporter: ``"torchscript"`` (``torch.onnx.export(..., dynamo=False)``, the default: exports in about a
            second) or ``"dynamo"`` (``torch.export``-based; ~20 s for UNeXt-S, no minimum side).

    Returns:
        ``path``.

    Raises:
        ValueError: unknown exporter, ``in_channels`` not the model's, ``size`` not allowed for the model, or an
            opset below 18 with the dynamo exporter.
        ImportError: ``onnx`` (or ``onnxscript`` for the dynamo exporter) is not installed.
    """
    onnx = require("onnx")
    if exporter == "dynamo":
        require("onnxscript")
    _check_export_args(model, in_channels, size, opset, exporter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export_to(model, path, in_channels, size, dynamic, opset, exporter)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    log.info("exported %s to %s (%s exporter, opset %d, %s axes)", type(model).__name__, path, exporter, opset,
             "dynamic batch/H/W" if dynamic else f"static 1x{in_channels}x{size}x{size}")  # fmt: skip
    return path


PREPROCESSING_KEY = "scunext.preprocessing"


def set_preprocessing_metadata(path: str | Path, preprocessing: dict[str, Any]) -> None:
    """Store how inputs must be prepared in the ONNX file's ``metadata_props`` (key ``scunext.preprocessing``, a
    JSON object), so that a consumer of the bare ``.onnx`` can apply the same preprocessing as ``Predictor``."""
    import json

    onnx = require("onnx")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props[PREPROCESSING_KEY] = json.dumps(preprocessing, sort_keys=True)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def read_preprocessing_metadata(path: str | Path) -> dict[str, Any] | None:
    """The ``scunext.preprocessing`` metadata of an ONNX file written by ``scunext export`` (None if absent)."""
    import json

    onnx = require("onnx")
    for p in onnx.load(str(path), load_external_data=False).metadata_props:
        if p.key == PREPROCESSING_KEY:
            return json.loads(p.value)
    return None


def make_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` set up for low latency.

    All graph optimisations (``ORT_ENABLE_ALL``), sequential execution, one inter-op thread and
    ``threads`` intra-op threads (default: ``torch.get_num_threads()``, so that both runtimes use the same cores).
    Idle worker threads sleep instead of spinning: measured faster on the project's shared 2-core machine (SC-UNeXt,
    2 threads: 11-12 ms vs 14 ms per 256x256 image) and it leaves the cores to PyTorch's own threads in between.

    Args:
        model: an ``.onnx`` path or the serialized model.
        threads: intra-op threads (>= 1).
    """
    ort = require("onnxruntime")
    threads = torch.get_num_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _is_dynamic(session: Any) -> bool:
    shape = session.get_inputs()[0].shape
    return not isinstance(shape[0], int) and not isinstance(shape[2], int)


def _second_input(x: torch.Tensor, low: int, divisor: int) -> torch.Tensor:
    """``x`` at a second size (half the side, or twice when half is too small) and batch 2."""
    h, w = x.shape[2:]
    h2 = h // 2 if h // 2 >= low and (h // 2) % divisor == 0 else 2 * h
    w2 = w // 2 if w // 2 >= low and (w // 2) % divisor == 0 else 2 * w
    y = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=False)
    return y[:2] if y.shape[0] >= 2 else torch.cat([y, y.flip(-1)])


def check_onnx(
    path: str | Path, model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], threads: int | None = None
) -> float:
    """Largest absolute logit difference between onnxruntime (the file at ``path``) and eager PyTorch (``model``
    in eval mode, unfused), on ``inputs`` and, if the graph has dynamic axes, also on ``inputs`` resized to a
    second size (half the side when allowed, else twice) at batch 2.

    Args:
        path: an exported ``.onnx`` file.
        model: the eager reference model (run in eval mode, then handed back in the mode it came in).
        inputs: float32 ``(B, C, H, W)`` preprocessed images, or a list of ``(C, H, W)`` ones (e.g.
            :func:`sample_inputs`): any allowed shape for a dynamic graph; for a static one its own H, W and a
            multiple of its batch size.
        threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).

    Returns:
        The maximum over all checked shapes of ``max |logits_ort - logits_torch|``.
    """
    if isinstance(inputs, (list, tuple)):  # e.g. sample_inputs(...)
        inputs = torch.stack(list(inputs))
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ValueError(f"inputs must be a (B, C, H, W) tensor or a list of (C, H, W) tensors, got "
                         f"{tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__}")
    session = make_session(path, threads)
    with eval_mode(model):  # the caller's model is handed back in the mode it came in
        return _max_difference(session, model, inputs)


def _max_difference(session: Any, model: nn.Module, inputs: torch.Tensor) -> float:
    device = next(model.parameters()).device
    cases = [inputs.float().cpu()]
    if _is_dynamic(session):
        cases.append(_second_input(cases[0], min_onnx_side(model), int(getattr(model, "input_divisor", 1))))
    batch = session.get_inputs()[0].shape[0]
    worst = 0.0
    for x in cases:
        with torch.inference_mode():
            ref = model(x.to(device)).float().cpu().numpy()
        step = batch if isinstance(batch, int) else len(x)  # a static graph takes its own batch size only
        out = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: c.numpy()})[0] for c in x.split(step)])
        if out.shape != ref.shape:
            raise RuntimeError(f"onnxruntime output shape {out.shape} differs from PyTorch's {ref.shape}")
        diff = float(np.abs(out - ref).max())
        log.info("onnxruntime vs eager on %s: max |logit difference| %.3g", tuple(x.shape), diff)
        worst = max(worst, diff)
    return worst


def sample_inputs(
    in_channels: int, size: int = 256, limit: int | None = None, intensity: str = "none"
) -> list[torch.Tensor]:
    """Real shipped sample images for a model with ``in_channels`` channels (3: ISIC 2017 dermoscopy, 1: chest
    X-rays), preprocessed exactly as for inference (:func:`scunext.data.preprocess`), sorted by file name.

    Args:
        in_channels: 1 or 3.
        size: side the images are resized to.
        limit: at most this many images (default: all 30).
        intensity: the model's intensity step (a ``percentile`` model must be calibrated on stretched images).

    Returns:
        float32 ``(in_channels, size, size)`` tensors.

    Raises:
        ValueError: no shipped sample for ``in_channels``.
    """
    from scunext.data import IMAGE_EXTENSIONS, read_image, sample_dir
    from scunext.data.preprocess import preprocess

    if in_channels not in SAMPLE_FOR_CHANNELS:
        raise ValueError(f"no shipped sample images with {in_channels} channels (have: "
                         f"{', '.join(f'{c} ({n})' for c, n in SAMPLE_FOR_CHANNELS.items())})")  # fmt: skip
    folder = sample_dir(SAMPLE_FOR_CHANNELS[in_channels]) / "images"
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    return [preprocess(read_image(f), in_channels, size, intensity) for f in files]

