"""Checkpoints without pickle: safetensors tensors + JSON metadata.

``<name>.safetensors`` holds the model weights (state dict, BN statistics included) and ``<name>.json`` says how
to rebuild the model (registry name and constructor arguments), the epoch and the run config. The resumable
training state (optimizer moments, scheduler, RNG states) is stored the same way in ``train_state.safetensors`` +
``train_state.json``. Nothing is ever unpickled, so loading a file from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from scunext.models import create_model
from scunext.runs.durable import atomic_write, write_file

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_weights_into",
    "save_train_state",
    "load_train_state",
    "atomic_write_text",
]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A missing, corrupt or mismatching checkpoint."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably (temp file, fsync, rename, fsync of the folder)."""
    atomic_write(Path(path), text.encode("utf-8"))


def _write(path: Path, data: bytes, atomic: bool) -> None:
    (atomic_write if atomic else write_file)(path, data)


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint metadata not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint metadata is corrupt (not JSON): {path}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint metadata is corrupt (not an object): {path}")
    return data


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint weights are corrupt or not safetensors: {path} ({exc})") from None


def save_checkpoint(path_stem: str | Path, model: nn.Module, model_name: str, *, atomic: bool = True,
                    **meta: Any) -> None:
    """Save ``model`` weights to ``<stem>.safetensors`` and ``{model, model_args, **meta}`` to ``<stem>.json``.

    Each file is replaced atomically (``atomic=True``), or written in place and fsync'ed (``atomic=False``, for a
    staging folder that an epoch commit publishes as a whole, :meth:`scunext.runs.RunDir.commit_epoch`)."""
    stem = Path(path_stem)
    model = getattr(model, "module", model)  # unwrap DDP
    init_args = getattr(model, "init_args", None)
    if init_args is None:
        raise CheckpointError(f"{type(model).__name__} has no init_args; cannot describe how to rebuild it")
    weights = _tensor_bytes(model.state_dict(), metadata={"model": model_name})
    _write(stem.with_suffix(".safetensors"), weights, atomic)
    payload = {"format_version": FORMAT_VERSION, "model": model_name, "model_args": init_args, **meta}
    _write(stem.with_suffix(".json"), json.dumps(payload, indent=2, default=str).encode(), atomic)


def load_checkpoint(path_stem: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and state dict of a checkpoint (``<stem>.json`` + ``<stem>.safetensors``)."""
    stem = Path(path_stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    meta = _read_json(stem.with_suffix(".json"))
    if "model" not in meta or "model_args" not in meta:
        raise CheckpointError(f"{stem.with_suffix('.json')}: not a scunext checkpoint (no model / model_args)")
    return meta, _read_tensors(stem.with_suffix(".safetensors"))


def load_model(path_stem: str | Path, expected_model: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode).

    Raises:
        CheckpointError: missing/corrupt files, a different model than ``expected_model``, or weights that do not
            fit the architecture.
    """
    meta, state = load_checkpoint(path_stem)
    if expected_model is not None and meta["model"] != expected_model:
        raise CheckpointError(f"checkpoint is a {meta['model']!r} model, expected {expected_model!r}")
    args = dict(meta["model_args"])
    try:
        model = create_model(meta["model"], **args)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint describes a model that cannot be built: {exc}") from None
    load_weights_into(model, state, f"{meta['model']} {args}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{Path(path_stem)}: {len(bad)} weight tensor(s) hold NaN/inf (e.g. {bad[0]}); this "
                              "checkpoint cannot predict anything; use another checkpoint or retrain")  # fmt: skip
    return model.eval(), meta


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], described: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line :class:`CheckpointError` on a mismatch."""
    try:
        getattr(model, "module", model).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"weights do not fit {described}: {first[1].strip() if len(first) > 1 else first[0]}"
        ) from None


# --- resumable training state ------------------------------------------------------------------------------------
def save_train_state(
    stem: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, extra: dict[str, Any],
    *, atomic: bool = True,
) -> None:
    """Optimizer tensors and RNG states to ``<stem>.safetensors``; everything else to ``<stem>.json``."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        state_meta[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                state_meta[str(pid)][k] = v
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    payload = {
        "format_version": FORMAT_VERSION,
        "optimizer_param_groups": opt["param_groups"],
        "optimizer_scalar_state": state_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng_numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
        **extra,
    }
    stem = Path(stem)
    _write(stem.with_suffix(".safetensors"), _tensor_bytes(tensors), atomic)
    _write(stem.with_suffix(".json"), json.dumps(payload, default=str).encode(), atomic)


def load_train_state(stem: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> dict[str, Any]:
    """Restore what :func:`save_train_state` wrote; returns the JSON payload (epoch, best score...).

    Raises:
        CheckpointError: a missing, corrupt or incomplete file (one line naming it), or a state of another model.
    """
    stem = Path(stem)
    try:
        return _load_train_state(stem, optimizer, scheduler, scaler)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{stem.with_suffix('.json')}: corrupt or incomplete training state ({what}); "
                              "resume is not possible from it") from None  # fmt: skip


def _load_train_state(stem: Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> dict[str, Any]:
    payload = _read_json(stem.with_suffix(".json"))
    tensors = _read_tensors(stem.with_suffix(".safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for pid, scalars in payload["optimizer_scalar_state"].items():
        state[int(pid)] = dict(scalars)
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    try:
        optimizer.load_state_dict({"state": state, "param_groups": payload["optimizer_param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{stem.with_suffix('.json')}: optimizer state does not fit this model: {exc}") from None
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler") is not None:
        scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    n = payload["rng_numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = payload["rng_python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    return payload
