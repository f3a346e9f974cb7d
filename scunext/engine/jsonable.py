"""Report values as plain JSON: the one conversion that evaluate, robustness and calibration reports share."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["jsonable"]


def jsonable(x: Any) -> Any:
    """``x`` with numpy/torch numbers, arrays and tuples made plain (``dict`` keys as strings, NaN as ``None``)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return None if math.isnan(v) else v
    if isinstance(x, np.integer):
        return int(x)
    if torch.is_tensor(x):
        return jsonable(x.tolist())
    return x
