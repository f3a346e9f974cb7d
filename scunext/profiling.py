"""Exact parameter and MAC accounting, and CPU latency measurement.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of convolutions,
transposed convolutions and matrix products (2 FLOPs per multiply-accumulate) and nothing else: norms,
activations, pooling, interpolation and element-wise products are not counted. We report ``FLOPs / 2`` and call it
MACs. (ptflops / fvcore / thop disagree with this on norms and activations; see docs/performance.md.)
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from scunext.hostinfo import cpu_name
from scunext.models import create_model, list_models

__all__ = ["count_params", "count_macs", "measure_latency", "ProfileResult", "profile_model", "MAC_COUNTER",
           "MAX_THREADS", "check_threads"]

log = logging.getLogger(__name__)

MAC_COUNTER = "torch.utils.flop_counter.FlopCounterMode FLOPs / 2 (conv, deconv, matmul only)"


def count_params(model: nn.Module) -> int:
    """Exact number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one eval-mode forward pass on an input of ``input_shape`` (``FLOPs / 2``).

    The count runs on a copy of the model on the ``meta`` device (shapes only, no arithmetic), so it is exact and
    takes milliseconds even for large models; the model itself is not touched.
    """
    meta_model = copy.deepcopy(model).to("meta").eval()
    x = torch.zeros(input_shape, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta_model(x)
    return counter.get_total_flops() // 2


#: the most CPU threads a measurement may ask for: more than any CPU has cores. Far above it torch's thread pool
#: fails or crashes the process (``torch.set_num_threads(100000)``: a segmentation fault).
MAX_THREADS = 1024


def check_threads(threads: int | None, flag: str = "--threads") -> None:
    """Refuse a thread count below 1 or above :data:`MAX_THREADS` (None: torch's default) with a one-line error."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"{flag} must be between 1 and {MAX_THREADS}, got {threads} (this machine has "
                         f"{os.cpu_count()} CPUs)")  # fmt: skip


def p90(times: list[float]) -> float:
    """90th percentile, linear between the two nearest runs (as ``scunext benchmark``: a nearest-rank pick was the
    maximum for three runs and the median's neighbour for few)."""
    return statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]


def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], warmup: int = 5, repeats: int = 20, threads: int | None = None
) -> dict[str, float]:
    """Wall-clock latency of ``model`` in eval mode under ``torch.inference_mode``.

    Returns:
        ``median_ms``, ``p90_ms``, ``min_ms`` over ``repeats`` timed runs after ``warmup`` untimed ones, and the
        thread count used.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    check_threads(threads, "threads")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(input_shape)
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": p90(times),
        "min_ms": times[0],
        "threads": used,
    }


@dataclass
class ProfileResult:
    """Everything ``scunext profile`` reports for one model, with its measurement context."""

    model: str
    params: int
    macs: int
    gmacs: float
    latency_ms: float | None  # the median of ``latency_repeats`` timed runs after ``latency_warmup`` untimed ones
    latency_p90_ms: float | None
    input_shape: list[int]
    threads: int
    torch_version: str
    cpu: str
    mac_counter: str = MAC_COUNTER
    latency_stat: str | None = None
    latency_repeats: int | None = None
    latency_warmup: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def profile_model(
    name: str,
    size: int = 256,
    in_channels: int = 3,
    num_classes: int = 1,
    latency: bool = True,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
    **overrides,
) -> ProfileResult:
    """Parameters, MACs and batch-1 CPU latency of a registered model at ``size x size``."""
    model = create_model(name, in_channels=in_channels, num_classes=num_classes, **overrides)
    shape = (1, in_channels, size, size)
    params = count_params(model)
    macs = count_macs(model, shape)
    lat = measure_latency(model, shape, warmup, repeats, threads) if latency else None
    log.info("%s: %d params, %.3f GMACs", name, params, macs / 1e9)
    return ProfileResult(
        model=name,
        params=params,
        macs=macs,
        gmacs=round(macs / 1e9, 4),
        latency_ms=None if lat is None else round(lat["median_ms"], 3),
        latency_p90_ms=None if lat is None else round(lat["p90_ms"], 3),
        input_shape=list(shape),
        threads=lat["threads"] if lat else (threads or torch.get_num_threads()),
        torch_version=torch.__version__,
        cpu=cpu_name(),
        latency_stat="median" if lat else None,
        latency_repeats=repeats if lat else None,
        latency_warmup=warmup if lat else None,
    )


def profile_all(size: int = 256, in_channels: int = 3, latency: bool = True, **kwargs) -> list[ProfileResult]:
    """:func:`profile_model` for every registered model."""
    return [profile_model(n, size=size, in_channels=in_channels, latency=latency, **kwargs) for n in list_models()]
