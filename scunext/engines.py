"""Inference engines: the same model run by eager PyTorch or by other runtimes.

An engine is built once from an eval-mode model and then called like the model: ``runner(x) -> logits`` with
``x`` a float32 ``(B, C, H, W)`` CPU tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ENGINES", "make_runner"]

#: engine names accepted by :func:`make_runner`
ENGINES = ("torch",)

Runner = Callable[[torch.Tensor], torch.Tensor]


def make_runner(model: nn.Module, engine: str = "torch") -> Runner:
    """A callable that runs ``model`` (eval mode, no autograd) with ``engine``.

    Raises:
        ValueError: unknown engine (the message lists the valid ones).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    model = model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run
