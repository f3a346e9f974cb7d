"""Deployment: BatchNorm folding, ONNX export checked against eager PyTorch, and int8 quantization.

* :func:`fuse_for_inference` folds every BatchNorm that directly follows a convolution into that convolution
  (found structurally with ``torch.fx``, folded with ``torch.nn.utils.fusion.fuse_conv_bn_eval``).
* :func:`export_onnx` writes a BN-folded eval model to ONNX (input ``image``, output ``logits``, dynamic batch and
  spatial axes) with the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) and validates it with
  ``onnx.checker``. The dynamo exporter (``exporter="dynamo"``, opset >= 18) gives an equally exact graph that runs
  equally fast under onnxruntime and also accepts the smallest inputs, but takes ~25x longer to export (about 20 s
  instead of under one for UNeXt-S), which the ``onnxruntime`` engine would pay each time it is built;
  ``docs/deployment.md`` has the measurements.
* :func:`check_onnx` measures the largest logit difference between onnxruntime and eager PyTorch.
* :func:`quantize_int8` makes a static int8 (QDQ, per-channel weights) model calibrated on real images, and
  :func:`dice_change` measures what that costs in Dice on image/mask pairs.
* :func:`export_run` does all of it for a training run folder (``scunext export``).

Limit of the TorchScript graph: UNeXt's token shift clamps its offset to the feature size (``min(|offset|, n)``),
and a trace records the clamp's value at the export size. The graph is therefore exact only while the deepest
token map is at least ``shift_size // 2`` pixels wide, i.e. for H, W >= :func:`min_onnx_side` (64 for the UNeXt
family); export refuses smaller trace sizes and the ``onnxruntime`` engine refuses smaller inputs with a clear error.

``onnx``, ``onnxruntime`` and ``onnxscript`` are optional (``pip install scunext[onnx]``); they are imported when
needed.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "EXPORTERS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "fuse_for_inference",
    "min_onnx_side",
    "export_onnx",
    "onnx_bytes",
    "make_session",
    "check_onnx",
    "quantize_int8",
    "dice_change",
    "SAMPLE_FOR_CHANNELS",
    "sample_inputs",
    "export_run",
]

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: ONNX exporters accepted by :func:`export_onnx`; the first is the default.
EXPORTERS = ("torchscript", "dynamo")

#: shipped sample (:func:`scunext.data.sample_dir`) of real images for a model's number of input channels
SAMPLE_FOR_CHANNELS = {3: "isic2017", 1: "chest-xray-lungs"}

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _require(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"{module} is not installed; install the ONNX extras: pip install 'scunext[onnx]'") from None


# --- BatchNorm folding -------------------------------------------------------------------------------------------
def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """``(conv, bn)`` submodule names where ``bn`` consumes ``conv``'s output and nothing else does; None if
    ``module.forward`` cannot be traced symbolically."""
    try:
        graph = fx.Tracer().trace(module)
    except Exception as exc:  # untraceable Python control flow: the caller descends into the children instead
        log.debug("fx cannot trace %s (%s); looking inside it", type(module).__name__, exc)
        return None
    mods = dict(module.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BATCHNORMS) or not node.args:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"):
            continue
        conv = mods.get(src.target)
        foldable = isinstance(conv, _CONVS) or (isinstance(conv, _TRANSPOSED) and conv.groups == 1)
        # a conv whose output is also used elsewhere, or a module called twice, cannot be rewritten in place
        if foldable and len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _fold(module: nn.Module) -> int:
    if not any(True for _ in module.children()):
        return 0
    # containers have no forward of their own: search their members
    pairs = None if isinstance(module, (nn.ModuleList, nn.ModuleDict)) else _conv_bn_pairs(module)
    if pairs is None:
        return sum(_fold(child) for child in module.children())
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        _replace(module, conv_name, fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, _TRANSPOSED)))
        _replace(module, bn_name, nn.Identity())
    return len(pairs)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A deep-copied eval-mode model with every BatchNorm that directly follows a convolution folded into it.

    Pairs are found structurally: each module whose ``forward`` ``torch.fx`` can trace is searched for a BatchNorm
    applied to the output of a convolution that feeds nothing else (``ConvBNReLU``, UNeXt's ``ConvStage`` and
    ``UpStage``, U-Net's double convs, the ResUNet++ residual bodies and shortcuts); modules fx cannot trace (the
    models' top level, the token-shift blocks) are searched child by child. A BatchNorm that does not follow a
    convolution directly (pre-activation ``BN -> ReLU -> conv``, ASPP's ``conv -> ReLU -> BN``, the SC-UNeXt
    pyramid's BN after a sum) stays as it is; it is exact in eval mode anyway. Folded BatchNorms become
    ``nn.Identity``, so the module tree and ``forward`` code are unchanged.

    Args:
        model: any module; it is not modified.

    Returns:
        The folded copy, in eval mode. Its outputs equal ``model.eval()``'s up to float rounding (~1e-6).
    """
    fused = copy.deepcopy(model).eval()
    total = sum(isinstance(m, _BATCHNORMS) for m in fused.modules())
    folded = _fold(fused)
    log.debug("folded %d of %d BatchNorm layers into their convolutions", folded, total)
    return fused


# --- export ------------------------------------------------------------------------------------------------------
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
    onnx = _require("onnx")
    if exporter == "dynamo":
        _require("onnxscript")
    _check_export_args(model, in_channels, size, opset, exporter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export_to(model, path, in_channels, size, dynamic, opset, exporter)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    log.info("exported %s to %s (%s exporter, opset %d, %s axes)", type(model).__name__, path, exporter, opset,
             "dynamic batch/H/W" if dynamic else f"static 1x{in_channels}x{size}x{size}")  # fmt: skip
    return path


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
    ort = _require("onnxruntime")
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


def check_onnx(path: str | Path, model: nn.Module, inputs: torch.Tensor, threads: int | None = None) -> float:
    """Largest absolute logit difference between onnxruntime (the file at ``path``) and eager PyTorch (``model``
    in eval mode, unfused), on ``inputs`` and, if the graph has dynamic axes, also on ``inputs`` resized to a
    second size (half the side when allowed, else twice) at batch 2.

    Args:
        path: an exported ``.onnx`` file.
        model: the eager reference model.
        inputs: float32 ``(B, C, H, W)`` preprocessed images: any allowed shape for a dynamic graph; for a static
            one its own H, W and a multiple of its batch size.
        threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).

    Returns:
        The maximum over all checked shapes of ``max |logits_ort - logits_torch|``.
    """
    session = make_session(path, threads)
    model = model.eval()
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


def sample_inputs(in_channels: int, size: int = 256, limit: int | None = None) -> list[torch.Tensor]:
    """Real shipped sample images for a model with ``in_channels`` channels (3: ISIC 2017 dermoscopy, 1: chest
    X-rays), preprocessed exactly as for inference (:func:`scunext.inference.preprocess`), sorted by file name.

    Args:
        in_channels: 1 or 3.
        size: side the images are resized to.
        limit: at most this many images (default: all 30).

    Returns:
        float32 ``(in_channels, size, size)`` tensors.

    Raises:
        ValueError: no shipped sample for ``in_channels``.
    """
    from scunext.data import IMAGE_EXTENSIONS, read_image, sample_dir
    from scunext.inference import preprocess

    if in_channels not in SAMPLE_FOR_CHANNELS:
        raise ValueError(f"no shipped sample images with {in_channels} channels (have: "
                         f"{', '.join(f'{c} ({n})' for c, n in SAMPLE_FOR_CHANNELS.items())})")  # fmt: skip
    folder = sample_dir(SAMPLE_FOR_CHANNELS[in_channels]) / "images"
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    return [preprocess(read_image(f), in_channels, size) for f in files]


# --- int8 --------------------------------------------------------------------------------------------------------
class _QuantizerNotes(logging.Filter):
    """Keeps onnxruntime's quantizer warnings on the root logger (1-D LayerNorm weights quantized per tensor,
    biases that are not initializers, the suggestion to pre-process) out of the user's console; kept at debug."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR and "onnxruntime" in record.pathname.replace("\\", "/"):
            self.dropped.append(record.getMessage())
            return False
        return True


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration_images: Sequence[np.ndarray | torch.Tensor],
    *,
    op_types: Sequence[str] | None = None,
) -> Path:
    """Static int8 quantization with onnxruntime: QDQ format, per-channel int8 weights, uint8 activations whose
    ranges are calibrated (min/max) on real images.

    Args:
        onnx_path: the fp32 model (from :func:`export_onnx`).
        out_path: where the int8 model is written.
        calibration_images: preprocessed images, each float32 ``(C, H, W)`` as the model sees them (e.g. from
            :meth:`~scunext.inference.Predictor.prepare`); use training images, never the test set.
        op_types: ONNX op types to quantize (default: every type onnxruntime can quantize).

    Returns:
        ``out_path``.

    Raises:
        ValueError: no calibration images.
    """
    _require("onnx")
    q = _require("onnxruntime.quantization")
    if not calibration_images:
        raise ValueError("quantize_int8 needs at least one calibration image")
    batches = [np.ascontiguousarray(np.asarray(im, dtype=np.float32)[None]) for im in calibration_images]

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quiet = _QuantizerNotes()
    logging.getLogger().addFilter(quiet)
    try:
        q.quantize_static(
            str(onnx_path), str(out_path), _Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            op_types_to_quantize=list(op_types) if op_types else None, calibrate_method=q.CalibrationMethod.MinMax,
        )  # fmt: skip
    finally:
        logging.getLogger().removeFilter(quiet)
    if quiet.dropped:
        log.debug("onnxruntime quantizer notes: %s", "; ".join(quiet.dropped))
    log.info("int8 model (QDQ, per-channel, %d calibration images) written to %s", len(batches), out_path)
    return out_path


def dice_change(
    reference: str | Path,
    candidate: str | Path,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    prepare: Callable[[np.ndarray], torch.Tensor],
    *,
    threshold: float = 0.5,
    threads: int | None = None,
) -> dict[str, float]:
    """Per-image mean Dice of two ONNX models (e.g. fp32 and int8) on image/mask pairs, scored at each mask's
    native resolution exactly as ``scunext evaluate`` does (logits resized bilinearly, sigmoid > ``threshold``).

    Args:
        reference: the fp32 ``.onnx``.
        candidate: the model to compare (e.g. from :func:`quantize_int8`).
        images: uint8 images as read by :func:`scunext.data.read_image`.
        masks: boolean ground-truth masks of the same sizes.
        prepare: image -> float32 ``(C, S, S)`` tensor (:meth:`~scunext.inference.Predictor.prepare`).
        threshold: foreground probability threshold.
        threads: onnxruntime intra-op threads.

    Returns:
        ``{"dice_reference", "dice_candidate", "change_points", "n_images", "pixels_changed_fraction"}``:
        change_points is ``100 * (candidate - reference)`` (negative = the candidate loses Dice).
    """
    from scunext.metrics import confusion_counts, dice_score

    if len(images) != len(masks) or not images:
        raise ValueError(f"need as many masks as images (and at least one), got {len(images)} and {len(masks)}")
    sessions = [make_session(reference, threads), make_session(candidate, threads)]
    scores: list[list[float]] = [[], []]
    changed = total = 0
    for im, mask in zip(images, masks):
        x = prepare(im)[None].float().numpy()
        preds = []
        for s, session in enumerate(sessions):
            logits = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][:, :1])
            up = F.interpolate(logits, size=mask.shape[:2], mode="bilinear", align_corners=False)
            pred = (torch.sigmoid(up) > threshold)[0]
            preds.append(pred)
            counts = confusion_counts(pred[None], torch.from_numpy(np.asarray(mask, bool))[None, None])
            scores[s].append(float(dice_score(counts, reduction="none")[0, 0]))
        changed += int((preds[0] != preds[1]).sum())
        total += preds[0].numel()
    ref, cand = float(np.mean(scores[0])), float(np.mean(scores[1]))
    return {
        "dice_reference": ref,
        "dice_candidate": cand,
        "change_points": 100.0 * (cand - ref),
        "n_images": float(len(images)),
        "pixels_changed_fraction": changed / total,
    }


# --- a whole run -------------------------------------------------------------------------------------------------
def _run_pairs(run_dir: Path, data: str, part: str) -> list[Any]:
    """The run's ``part`` image/mask pairs if its split and data folder are reachable, else an empty list."""
    from scunext.data import DataError, Split, discover_pairs, select_pairs

    split_file = run_dir / "split.json"
    if not data or not split_file.is_file() or not Path(data).is_dir():
        return []
    try:
        ids = getattr(Split.from_json(split_file), part)
        return select_pairs(discover_pairs(data), ids) if ids else []
    except (DataError, ValueError, KeyError) as exc:
        log.warning("cannot use the %s images of %s (%s)", part, run_dir, exc)
        return []


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    checkpoint: str = "best",
    size: int | None = None,
    dynamic: bool = True,
    int8: bool = False,
    parity_images: int = 8,
    calibration_images: int = 32,
) -> dict[str, Any]:
    """Export a training run's checkpoint to ONNX and check it against eager PyTorch on real images.

    The parity check runs the first ``parity_images`` shipped sample images of the model's modality
    (:data:`SAMPLE_FOR_CHANNELS`), preprocessed as for inference, through both runtimes (:func:`check_onnx`).
    With ``int8`` it also writes ``<out stem>-int8.onnx`` (:func:`quantize_int8`) calibrated on
    ``calibration_images`` of the run's *training* images (a seeded random choice; the shipped samples if the
    run's data folder is not reachable), and measures its Dice change against the fp32 graph on the run's *test*
    images (the shipped sample pairs if those are not reachable) with :func:`dice_change`.

    Args:
        run_dir: a training run folder.
        out: the ``.onnx`` file (default ``RUN_DIR/model.onnx``).
        checkpoint: ``"best"`` or ``"last"``.
        size: trace size (default: the run's training size); with ``dynamic=False`` the graph's fixed size.
        dynamic: dynamic batch and H/W axes.
        int8: also write and assess a static int8 model.
        parity_images: how many sample images the parity check uses.
        calibration_images: how many training images calibrate the int8 model.

    Returns:
        A JSON-able report: ``onnx`` (path), ``max_abs_logit_diff``, ``parity_inputs`` (description), and with
        ``int8``: ``int8_onnx``, ``int8_max_abs_logit_diff``, ``calibration`` and ``dice`` (:func:`dice_change`
        plus ``on``).

    Raises:
        CheckpointError: missing run or checkpoint.
        ValueError: bad ``size`` for the model, or no sample images for its number of channels.
    """
    from scunext.config import load_config
    from scunext.data import read_image, read_mask, sample_dir
    from scunext.inference import Predictor, preprocess

    run_dir = Path(run_dir)
    pred = Predictor.from_run(run_dir, checkpoint)
    size = pred.size if size is None else size
    out = Path(out) if out is not None else run_dir / "model.onnx"
    path = export_onnx(pred.model, out, in_channels=pred.in_channels, size=size, dynamic=dynamic)
    sample = SAMPLE_FOR_CHANNELS.get(pred.in_channels)
    x = torch.stack(sample_inputs(pred.in_channels, size, parity_images))
    report: dict[str, Any] = {
        "run": str(run_dir), "model": pred.name, "checkpoint": checkpoint, "onnx": str(path), "size": size,
        "dynamic": dynamic, "max_abs_logit_diff": check_onnx(path, pred.model, x),
        "parity_inputs": f"{len(x)} shipped {sample} images at {size}x{size}"
        + (" and at a second size, batch 2" if dynamic else ""),
    }  # fmt: skip
    if not int8:
        return report

    cfg = load_config(run_dir / "config.yaml")
    side = pred.size if dynamic else size  # what the graph will be fed: images at the training size if it can be

    def prepare(image: np.ndarray) -> torch.Tensor:
        return preprocess(image, pred.in_channels, side)

    train = _run_pairs(run_dir, cfg.data, "train")
    if train:
        rng = np.random.default_rng(0)
        chosen = [train[i] for i in sorted(rng.choice(len(train), min(calibration_images, len(train)), replace=False))]
        calib = [prepare(read_image(p.image)) for p in chosen]
        report["calibration"] = f"{len(calib)} training images of {cfg.data}"
    else:
        calib = sample_inputs(pred.in_channels, side, calibration_images)
        report["calibration"] = f"{len(calib)} shipped {sample} images (the run's training data is not reachable)"
    q = quantize_int8(path, path.with_name(path.stem + "-int8.onnx"), calib)
    report["int8_onnx"] = str(q)
    report["int8_max_abs_logit_diff"] = check_onnx(q, pred.model, x)
    test = _run_pairs(run_dir, cfg.data, "test")
    on = f"{len(test)} test images of {cfg.data}"
    if not test:
        from scunext.data import discover_pairs

        test = discover_pairs(sample_dir(sample))
        on = f"{len(test)} shipped {sample} pairs (the run's test data is not reachable)"
    images = [read_image(p.image) for p in test]
    masks = [read_mask(p.mask, threshold=cfg.threshold_masks) for p in test]
    report["dice"] = {**dice_change(path, q, images, masks, prepare, threshold=pred.threshold), "on": on}
    return report
