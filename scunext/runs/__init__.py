"""Run folders: their layout, status, crash-consistent epoch commits and resume rules (:class:`RunDir`), and the
pickle-free checkpoints they hold (:mod:`scunext.runs.checkpoint`). A low layer: engine/, deploy/, experiments and
weights import it; it imports only config, data and models."""

from scunext.runs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_train_state,
    load_weights_into,
    save_checkpoint,
    save_train_state,
)
from scunext.runs.lock import FolderLock
from scunext.runs.run_dir import CHECKPOINTS, LOG_FIELDS, RunDir, RunFolderError, RunInUseError, data_root_of

__all__ = [
    "RunDir",
    "RunFolderError",
    "RunInUseError",
    "FolderLock",
    "LOG_FIELDS",
    "CHECKPOINTS",
    "data_root_of",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_weights_into",
    "save_train_state",
    "load_train_state",
]
