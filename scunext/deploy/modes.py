"""Run a caller's model in eval mode for a moment and hand it back exactly as it came."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every submodule gets back its own train/eval flag (a model
    fine-tuned with frozen BatchNorm layers, eval inside train, stays so; ``model.train(flag)`` would reset them)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training
