"""The run folder: one owner for its layout, its status file, its checkpoints and the rules of resume.

A run folder holds::

    config.yaml             the resolved config (the single source of truth for the run)
    split.json              the exact file lists (train / val / test) and how they were made
    run.json                status (running / finished / failed + message), epochs done, best validation score,
                            timing, moves, and the commit record of the last finished epoch (the only run.json parser
                            is this module)
    log.csv                 one row per finished epoch: losses, validation Dice/IoU, learning rate, seconds
    curves.png              training curves (cosmetic, redrawn from log.csv)
    best.safetensors/.json  weights + metadata of the best epoch on the validation part (never the test part)
    last.safetensors/.json  weights + metadata of the last finished epoch
    train_state.*           optimizer, scheduler, scaler and RNG states for ``--resume``
    eval/SUBSET/            reports of ``scunext evaluate``
    .writer.lock            the writer lock (:mod:`scunext.runs.lock`): one trainer at a time, gone with its process

**Epoch commit** (:meth:`RunDir.commit_epoch`). The files of epoch k (``best.*`` when it improved, ``last.*``,
``train_state.*`` and the whole new ``log.csv``) are written and fsync'ed into ``.staging-e<k>/``, the staging
folder is fsync'ed, and then ``run.json`` is replaced atomically (temp file, fsync, rename, fsync of the folder)
with a commit record ``{"epoch": k, "staging": ..., "files": {name: {size, sha256}}}``. That rename is the commit
point: before it the folder is epoch k-1 in every file, after it epoch k. The staged files are then renamed into
place, the folder fsync'ed and the staging folder removed; a crash in that phase is finished by
:meth:`RunDir.recover` (roll forward), and readers meanwhile read the staged copies. ``recover`` also removes
orphans (``NAME.tmpPID`` files, uncommitted staging folders) and refuses a folder whose files disagree with the record.

**One writer.** The trainer holds the folder's writer lock from creation (or from resume) to its end; a second
``train --resume`` of the same folder, or an experiment runner reaching a run another process is training, is
refused with :class:`RunInUseError` instead of removing the other's staging folder as an orphan. A crashed trainer
holds nothing (the kernel drops the lock with the process), so resume after a crash is never blocked.

Runs written before the commit record existed (no ``commit`` in run.json) stay readable for evaluate / predict /
export; resuming an unfinished one is allowed when its ``last.json``, ``train_state.json`` and ``best.json`` agree
on the epochs (log.csv is then cut to the last finished epoch), and refused with one line otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scunext.checksum import sha256_file
from scunext.config import TrainConfig, load_config
from scunext.data import Split, sample_dir
from scunext.errors import shown
from scunext.runs.checkpoint import CheckpointError, load_model
from scunext.runs.durable import atomic_write_text, fsync_dir, remove_tree, rename, write_file, writer_gone
from scunext.runs.lock import FolderLock

__all__ = ["RunDir", "RunFolderError", "RunInUseError", "LOG_FIELDS", "CHECKPOINTS", "data_root_of"]

log = logging.getLogger(__name__)

#: columns of log.csv
LOG_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "epoch_seconds"]
#: the model checkpoints of a run
CHECKPOINTS = ("best", "last")
_STAGING = ".staging-e"
#: the temporary files of :func:`~scunext.runs.durable.atomic_write` (``NAME.tmpPID``): the only loose files this
#: package leaves after a crash. A user's ``notes.tmpl`` or ``extra.tmp_keep/`` is not one of them and is kept.
_ORPHAN = re.compile(r"\.tmp\d+$")
#: the hidden sibling folder :meth:`RunDir.create` writes a new run in (``.NAME.creatingPID``)
_CREATING = r"\.creating(\d+)$"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists already, missing, finished, damaged). One-line message."""


class RunInUseError(RunFolderError):
    """Another live process is writing the run folder (it holds the writer lock)."""


def data_root_of(cfg: TrainConfig) -> Path:
    """``cfg.data``, or the shipped ISIC 2017 sample when empty."""
    return Path(cfg.data) if cfg.data else sample_dir("isic2017")


def _digest(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


class RunDir:
    """A training run folder (see the module docstring for its layout and commit protocol).

    Readers (evaluate, predict, export, serve, experiments) use :meth:`load_config`, :meth:`load_split`,
    :meth:`data_root`, :meth:`checkpoint_stem`, :meth:`load_model` and :meth:`read_status`; the trainer alone
    writes, through :meth:`create`, :meth:`prepare_resume`, :meth:`commit_epoch`, :meth:`update_status`,
    :meth:`mark_failed` and :meth:`record_move`, holding the writer lock (:meth:`acquire` / :meth:`release`).
    """

    CONFIG = "config.yaml"
    #: the settings a resumed run may change (where it trains, not what): every other one is part of each commit
    #: record, so a ``config.yaml`` edited between a stop and ``--resume`` is refused, not trained half and half
    MOVABLE = ("device", "data", "num_workers")
    SPLIT = "split.json"
    STATUS = "run.json"
    LOG = "log.csv"
    CURVES = "curves.png"
    TRAIN_STATE = "train_state"
    CARD = "card.json"
    #: the quality calibration (:mod:`scunext.deploy.quality`), written by ``scunext calibrate``
    QUALITY = "quality.json"
    EVAL = "eval"
    ONNX = "model.onnx"
    LOCK = FolderLock.NAME

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = FolderLock(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- layout ------------------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def split_file(self) -> Path:
        return self.path / self.SPLIT

    @property
    def status_file(self) -> Path:
        return self.path / self.STATUS

    @property
    def log_file(self) -> Path:
        return self.path / self.LOG

    @property
    def curves_file(self) -> Path:
        return self.path / self.CURVES

    @property
    def card_file(self) -> Path:
        return self.path / self.CARD

    @property
    def train_state_stem(self) -> Path:
        """Stem of ``train_state.safetensors`` + ``train_state.json``."""
        return self.path / self.TRAIN_STATE

    @property
    def onnx_file(self) -> Path:
        """Default output of ``scunext export``."""
        return self.path / self.ONNX

    def eval_dir(self, subset: str) -> Path:
        """Where ``scunext evaluate`` writes the report of ``subset``."""
        return self.path / self.EVAL / subset

    def _files_of(self, stem: str) -> list[str]:
        return [f"{stem}.safetensors", f"{stem}.json"]

    def _known_names(self) -> set[str]:
        names = {self.CONFIG, self.SPLIT, self.STATUS, self.LOG, self.CURVES, self.EVAL, self.ONNX, self.LOCK}
        for stem in (*CHECKPOINTS, self.TRAIN_STATE):
            names.update(self._files_of(stem))
        return names

    def holds(self, path: str | Path) -> bool:
        """Whether ``path`` is one of the files this folder is made of (config, split, status, log, checkpoints,
        training state, card, quality calibration, exported ONNX, or the staged copy of one): a command's output
        there would replace what the run reads (``export RUN --out RUN/best.safetensors --overwrite`` replaced the
        weights by the ONNX graph)."""
        path = Path(path)
        try:
            folder, here = path.parent.resolve(), self.path.resolve()
        except OSError:
            return False
        if folder.parent == here and folder.name.startswith(_STAGING):
            folder = here
        int8 = f"{Path(self.ONNX).stem}-int8.onnx"  # export --int8's second file
        names = self._known_names() | {self.CARD, self.QUALITY, int8}
        return folder == here and path.name in names

    def _resolve(self, name: str) -> Path:
        """Path of ``name`` as of the last commit: the staged copy while a committed epoch is being put in place."""
        staged = self._committed_staging()
        if staged is not None and (staged / name).is_file():
            return staged / name
        return self.path / name

    # --- the writer lock -----------------------------------------------------------------------------------
    def in_use(self) -> bool:
        """Another process (or another RunDir object) is writing this folder now."""
        return self._lock.taken_elsewhere()

    def lock_holder(self) -> str:
        """Who holds (or last held) the writer lock: ``pid N on HOST``."""
        return self._lock.holder()

    def _in_use_error(self, doing: str) -> RunInUseError:
        return RunInUseError(f"cannot {doing}: {self.path} is in use by {self.lock_holder()} (training or scoring "
                             f"it); wait for it to end, or stop it and use --resume")  # fmt: skip

    def acquire(self) -> None:
        """Take the writer lock of the (existing) folder; :class:`RunInUseError` when another process has it."""
        if not self._lock.acquire():
            raise self._in_use_error("write to it")

    def release(self) -> None:
        """Drop the writer lock if this object holds it."""
        self._lock.release()

    # --- status (run.json) ------------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        """The content of run.json; ``{}`` when there is none (a released-weights folder, a new run)."""
        if not self.status_file.is_file():
            return {}
        try:
            data = json.loads(self.status_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunFolderError(f"{self.status_file}: corrupt (not JSON); the run folder was damaged") from None
        if not isinstance(data, dict):
            raise RunFolderError(f"{self.status_file}: corrupt (not a JSON object); the run folder was damaged")
        return data

    def status(self) -> str:
        """``new`` (no run.json), ``running``, ``finished`` or ``failed``."""
        return str(self.read_status().get("status", "new"))

    def update_status(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json (atomic, durable; the commit record is kept)."""
        status = self.read_status()
        status.update(fields)
        self._write_status(status)

    def _write_status(self, status: dict[str, Any]) -> None:
        atomic_write_text(self.status_file, json.dumps(status, indent=2, default=str))

    def _commit(self) -> dict[str, Any] | None:
        rec = self.read_status().get("commit")
        return rec if isinstance(rec, dict) else None

    def is_legacy(self) -> bool:
        """A folder without a commit record: made by an older scunext, or released weights."""
        return self._commit() is None

    def epochs_done(self) -> int:
        """Epochs of the last commit (for an old-format run: ``epochs_done`` of run.json)."""
        rec = self._commit()
        if rec is not None:
            return int(rec.get("epoch", 0))
        return int(self.read_status().get("epochs_done", 0) or 0)

    def _committed_staging(self) -> Path | None:
        rec = self._commit()
        name = rec.get("staging") if rec else None
        if name and (self.path / name).is_dir():
            return self.path / name
        return None

    # --- config, split, data ----------------------------------------------------------------------------------
    def load_config(self) -> TrainConfig:
        if not self.path.is_dir():
            raise RunFolderError(f"run folder not found: {self.path}")
        if not self.config_file.is_file():
            raise RunFolderError(f"{self.path}: not a training run folder (no {self.CONFIG})")
        return load_config(self.config_file, saved=True)  # (bounds added since it trained do not apply)

    def save_config(self, cfg: TrainConfig) -> None:
        atomic_write_text(self.config_file, cfg.to_yaml())

    def load_split(self) -> Split:
        return Split.from_json(self.split_file)

    def data_root(self, data: str | Path | None = None, cfg: TrainConfig | None = None) -> Path:
        """``data`` if given, else the run's data folder (the shipped ISIC 2017 sample when the config has none)."""
        if data:
            return Path(data)
        return data_root_of(cfg if cfg is not None else self.load_config())

    # --- checkpoints (readers) --------------------------------------------------------------------------------
    def checkpoint_stem(self, which: str = "best") -> Path:
        """Path stem of ``best`` / ``last``, with a clear error if the run has none."""
        if not self.path.is_dir():
            raise CheckpointError(f"run folder not found: {self.path}")
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
        rec = self._commit()
        if rec is not None and f"{which}.json" not in rec.get("files", {}):
            raise CheckpointError(f"{self.path} has no {which} checkpoint (no epoch has finished)")
        path = self._resolve(f"{which}.json")
        if not path.is_file():
            raise CheckpointError(f"{self.path} has no {which} checkpoint (has it finished an epoch?)")
        return path.with_suffix("")

    def weights_sha256(self, which: str = "best") -> str:
        """SHA-256 of checkpoint ``which``'s weights file (the ``weights_sha256`` of a released card): what a
        quality calibration is tied to. A file that differs from the run's commit record is refused first
        (:class:`CheckpointError`, as when loading it)."""
        stem = self.checkpoint_stem(which)
        self._check_recorded(which)  # (hashes the file against the record: then the record's hash is the file's)
        recorded = ((self._commit() or {}).get("files") or {}).get(f"{which}.safetensors")
        return recorded["sha256"] if recorded else _digest(stem.with_suffix(".safetensors"))["sha256"]

    def load_model(self, which: str = "best", cfg: TrainConfig | None = None):
        """The model of checkpoint ``which`` and its metadata, refused (:class:`CheckpointError`, one line) when its
        files differ from the run's commit record or it is not the model of the run's config."""
        stem = self.checkpoint_stem(which)
        self._check_recorded(which)
        model, meta = load_model(stem)
        cfg = cfg if cfg is not None else self.load_config()
        self.check_checkpoint_matches(meta, cfg, stem)
        return model, meta

    def _check_recorded(self, stem: str) -> None:
        rec = self._commit()
        if rec is None:
            return
        for name in self._files_of(stem):
            want = rec.get("files", {}).get(name)
            path = self._resolve(name)
            if want is None or not path.is_file() or _digest(path) != want:
                raise CheckpointError(
                    f"{self.path / name} is not the file the run committed at epoch {rec.get('epoch')} (changed "
                    "outside scunext?); put the run's own file back or retrain"
                )

    @staticmethod
    def check_checkpoint_matches(meta: dict[str, Any], cfg: TrainConfig, stem: Path) -> None:
        """Refuse a checkpoint of another model than ``cfg`` describes (name, model_args, in_channels), or one trained
        with other preprocessing (``size``, ``intensity`` in its metadata): a ``size: 128`` edited into the
        config.yaml of a 256 model gave wrong masks (Dice 0.30 against its own) with exit 0."""
        args = meta.get("model_args") or {}
        wrong = []
        if meta.get("model") != cfg.model:
            wrong.append(f"model {meta.get('model')!r} instead of {cfg.model!r}")
        for k, v in cfg.model_args.items():
            if k in args and args[k] != v:
                wrong.append(f"{k}={args[k]!r} instead of {v!r}")
        if cfg.in_channels and "in_channels" in args and args["in_channels"] != cfg.in_channels:
            wrong.append(f"in_channels={args['in_channels']} instead of {cfg.in_channels}")
        trained = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        edited = [f"{key}: {getattr(cfg, key)!r}, but the checkpoint was trained with {trained[key]!r}"
                  for key in ("size", "intensity")  # its preprocessing (older checkpoints: unchecked)
                  if key in trained and trained[key] != getattr(cfg, key)]  # fmt: skip
        if edited and not wrong:  # the run's own weights, its config.yaml edited: the file is what to restore
            raise CheckpointError(f"{stem.parent / RunDir.CONFIG} says {'; '.join(edited)}; restore it (the "
                                  "preprocessing must be the one the model was trained with)")  # fmt: skip
        wrong += edited
        if wrong:
            raise CheckpointError(f"{stem}: checkpoint does not belong to this run ({'; '.join(wrong)} as its "
                                  "config.yaml says); put the run's own checkpoint back")  # fmt: skip

    # --- creating a run ---------------------------------------------------------------------------------------
    def reusable(self) -> bool:
        """A failed run that holds no finished epoch may be replaced by a new run with the same ``--out``."""
        if self.status() != "failed":
            return False
        if self.is_legacy():
            return not any((self.path / f).exists() for f in ("last.json", "best.json", "train_state.json"))
        return self.epochs_done() == 0

    def check_new(self) -> None:
        """Raise :class:`RunFolderError` unless a new run may be created here (checks only, writes nothing)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} exists and is not a folder; pick another --out")
        if not self.path.is_dir() or not any(self.path.iterdir()):
            return
        if self.in_use():
            raise self._in_use_error("start a new run there")
        if self.reusable():
            others = [p.name for p in self.path.iterdir() if not self._removable(p.name)]
            if others:
                raise RunFolderError(f"{self.path} holds a failed run without a finished epoch but also other files "
                                     f"({', '.join(sorted(others)[:3])}); pick another --out")  # fmt: skip
            return
        raise RunFolderError(f"run folder {self.path} exists and is not empty; pick another --out or use --resume")

    def _removable(self, name: str) -> bool:
        return name in self._known_names() or name.startswith(_STAGING) or _ORPHAN.search(name) is not None

    def create(self, cfg: TrainConfig, split: Split, **status: Any) -> None:
        """Start a new run: config.yaml, split.json and run.json (``running``, commit of epoch 0), written in a
        hidden sibling folder and renamed into place, so a crash leaves no folder or a complete one. A failed run
        without a finished epoch in the folder is replaced (logged)."""
        self.check_new()
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        creating = re.compile(re.escape(f".{self.path.name}") + _CREATING)
        for old in parent.glob(f".{self.path.name}.creating*"):  # left by a crash during an earlier create
            found = creating.fullmatch(old.name)
            if found and writer_gone(int(found.group(1))):  # (a live process's is its create in progress)
                remove_tree(old)
        tmp = parent / f".{self.path.name}.creating{os.getpid()}"
        tmp.mkdir()
        new = RunDir(tmp)
        new.acquire()  # the lock goes with the folder through the rename below
        try:
            write_file(new.config_file, cfg.to_yaml().encode())
            write_file(new.split_file, (json.dumps(split.to_dict(), indent=2) + "\n").encode())
            first = {"status": "running", "epochs": cfg.epochs, "epochs_done": 0, **status,
                     "commit": {"epoch": 0, "files": {}}}  # fmt: skip
            write_file(new.status_file, json.dumps(first, indent=2, default=str).encode())
            fsync_dir(tmp)
            if self.path.exists():
                try:  # again: another process may have started a run there since the check above
                    self.check_new()
                except RunFolderError:
                    remove_tree(tmp)
                    raise
                if any(self.path.iterdir()):
                    log.info("%s: replacing a failed run that finished no epoch (%s)", self.path,
                             self.read_status().get("message", "no message"))  # fmt: skip
                remove_tree(self.path)
            try:
                rename(tmp, self.path)
            except OSError:  # another process created the folder since check_new
                remove_tree(tmp)
                raise RunInUseError(f"run folder {self.path} was created by another process just now; pick "
                                    f"another --out or use --resume") from None  # fmt: skip
            self._lock, new._lock = new._lock, self._lock  # the renamed folder's lock is now this run's
            self._lock.moved_to(self.path)
            fsync_dir(parent)
        finally:
            new.release()  # held only if something failed before the rename: never keep a lock on a dead folder

    # --- resuming a run ---------------------------------------------------------------------------------------
    def check_resumable(self) -> TrainConfig:
        """Read-only checks of ``--resume`` (any rank): the run exists, is not finished and no other process is
        writing it; returns its config."""
        if not self.path.is_dir():
            raise RunFolderError(f"cannot resume: run folder {self.path} does not exist")
        if not self.status_file.is_file():
            raise RunFolderError(f"cannot resume: {self.path} is not a scunext run folder (no {self.STATUS})")
        if self.in_use():
            raise self._in_use_error("resume")
        status = self.read_status()
        if status.get("status") == "finished":
            raise RunFolderError(
                f"cannot resume: {self.path} already finished {status.get('epochs_done')}/{status.get('epochs')} epochs"
            )
        return self.load_config()

    def prepare_resume(self) -> int:
        """Bring the folder to its last commit (roll a committed epoch forward, remove orphans, adopt an old-format
        run), check every recorded file, and return the epoch to continue after (0: none finished, the run starts
        again from its saved config and split, which gives the same run). Writer only (rank 0); takes the writer
        lock (kept until :meth:`release`) before anything in the folder changes."""
        self.check_resumable()
        if not self.is_legacy() and self._committed_staging() is None:
            self.verify()  # read-only: a damaged folder is refused before even the lock file appears in it
        self.acquire()
        self.check_resumable()  # (finished by the previous holder just before we took the lock)
        if self.is_legacy():
            self._adopt_legacy()
        self.recover()
        return self.epochs_done()

    def recover(self) -> None:
        """Finish putting a committed epoch in place, remove orphans, and verify the commit record."""
        staged = self._committed_staging()
        if staged is not None:
            log.info("%s: completing the commit of epoch %d interrupted by a crash", self.path, self.epochs_done())
            self._apply(staged)
        for p in list(self.path.iterdir()):
            if p.name.startswith(_STAGING) or _ORPHAN.search(p.name):
                log.info("%s: removing %s left by an interrupted write", self.path, p.name)
                remove_tree(p)
        self.verify()

    def _settings(self, text: str | None = None) -> dict[str, Any] | None:
        """The run's ``config.yaml`` (or the YAML ``text``) as plain data, without the :data:`MOVABLE` keys (None:
        not a readable mapping)."""
        import yaml

        try:
            data = yaml.safe_load(self.config_file.read_text(encoding="utf-8") if text is None else text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        return json.loads(json.dumps({str(k): v for k, v in data.items() if k not in self.MOVABLE}, default=str))

    def verify(self) -> None:
        """Every file of the commit record is present with its recorded size and hash, and ``config.yaml`` holds
        the settings of the commit (apart from :data:`MOVABLE`); else one-line refusal."""
        rec = self._commit()
        if rec is None:
            return
        want, got = rec.get("config"), self._settings()
        if isinstance(want, dict) and isinstance(got, dict):  # a key added to the format since, at its default, is
            got = _without_added_defaults(got, want, self._settings(TrainConfig().to_yaml()) or {})  # no change
        if isinstance(want, dict) and got != want:
            now = got or {}
            keys = sorted(k for k in {*want, *now} if k not in want or k not in now or want[k] != now[k])
            changed = ", ".join(f"{k} {shown(want.get(k))} -> {shown(now.get(k))}" for k in keys[:4])
            raise RunFolderError(f"{self.config_file}: not the settings the run was trained with up to epoch "
                                 f"{rec.get('epoch')} ({changed or 'unreadable'}; changed outside scunext); restore "
                                 f"it, or start a new run with the new settings (only {', '.join(self.MOVABLE)} may "
                                 "change on --resume)")  # fmt: skip
        for name, want in sorted(rec.get("files", {}).items()):
            path = self.path / name
            if not path.is_file():
                raise RunFolderError(f"{self.path}: {name} of the epoch-{rec.get('epoch')} commit is missing; the "
                                     "folder was changed outside scunext and cannot be resumed exactly")  # fmt: skip
            if _digest(path) != want:
                raise RunFolderError(f"{self.path}: {name} differs from the epoch-{rec.get('epoch')} commit record "
                                     "(changed outside scunext); restore it or start the run again")  # fmt: skip

    def _adopt_legacy(self) -> None:
        """An unfinished run of the old format: accept it when its files agree, then write a commit record."""

        def epoch_of(name: str) -> int | None:
            path = self.path / f"{name}.json"
            if not path.is_file():
                return None
            try:
                return int(json.loads(path.read_text())["epoch"])
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                raise RunFolderError(f"cannot resume: {path} is corrupt") from None

        last, state, best = epoch_of("last"), epoch_of(self.TRAIN_STATE), epoch_of("best")
        if last is None and state is None:  # nothing finished: start again (a best.* of the killed epoch 1 goes)
            for name in [*self._files_of("best"), self.LOG]:
                remove_tree(self.path / name)
            self.update_status(epochs_done=0, commit={"epoch": 0, "files": {}})
            return
        if last != state or (best is not None and best > last):
            raise RunFolderError(f"cannot resume: {self.path} is an old-format run whose files disagree (last epoch "
                                 f"{last}, train_state epoch {state}, best epoch {best}); start it again")  # fmt: skip
        rows = self.read_log()
        kept = {int(r["epoch"]): r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) <= last}
        if sorted(kept) != list(range(1, last + 1)):
            raise RunFolderError(f"cannot resume: {self.log_file} lacks rows of epochs 1..{last}; start it again")
        atomic_write_text(self.log_file, _log_text([kept[e] for e in sorted(kept)]))
        names = [*self._files_of("last"), *self._files_of(self.TRAIN_STATE), self.LOG]
        if best is not None:
            names += self._files_of("best")
        files = {n: _digest(self.path / n) for n in names}
        log.info("%s: old-format run adopted at epoch %d (log.csv cut to it)", self.path, last)
        self.update_status(epochs_done=last, commit={"epoch": last, "files": files})

    # --- the epoch commit -------------------------------------------------------------------------------------
    def read_log(self) -> list[dict[str, str]]:
        """The rows of log.csv as of the last commit."""
        path = self._resolve(self.LOG)
        if not path.is_file():
            return []
        return list(csv.DictReader(io.StringIO(path.read_text())))

    def commit_epoch(
        self, epoch: int, writers: dict[str, Callable[[Path], None]], log_row: dict[str, Any],
        config: TrainConfig | None = None, **status: Any,
    ) -> None:  # fmt: skip
        """Publish epoch ``epoch`` as a whole: ``writers`` maps a stem (``best``, ``last``, ``train_state``) to a
        function that writes ``<stem>.safetensors`` + ``<stem>.json`` at the stem it is given (without renames);
        ``log_row`` is appended to log.csv; ``status`` fields go into run.json with the commit record. ``config``:
        the settings the trainer holds: a ``config.yaml`` edited while the run trains was recorded as the run's
        settings (and a resume then trained half and half); the commit keeps the trained values of edited keys, so
        ``--resume`` refuses the edited file."""
        rec = self._commit() or {"epoch": 0, "files": {}}
        settings = self._settings()
        trained = self._settings(config.to_yaml()) if config is not None else None
        try:  # the file as the trainer would read it (an old file's missing keys and partial mappings filled in)
            on_disk = (self._settings(load_config(self.config_file, saved=True).to_yaml())
                       if trained is not None else None)  # fmt: skip
        except (ValueError, OSError):  # not a readable config any more: --resume refuses it (verify / load_config)
            on_disk = None
        if isinstance(settings, dict) and isinstance(trained, dict) and isinstance(on_disk, dict):
            edited = sorted(k for k in on_disk if k in trained and on_disk[k] != trained[k])
            if edited:
                log.warning("%s was changed while the run trains (%s); the run keeps its settings, and --resume "
                            "will refuse the edited file", self.config_file, ", ".join(edited))  # fmt: skip
                settings = {**settings, **{k: trained[k] for k in edited}}
        staging = self.path / f"{_STAGING}{epoch:06d}"
        for p in self.path.iterdir():  # an earlier, uncommitted attempt
            if p.name.startswith(_STAGING):
                remove_tree(p)
        staging.mkdir()
        for stem, write in writers.items():
            write(staging / stem)
        rows = [r for r in self.read_log() if int(r["epoch"]) < epoch]
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in log_row.items()}
        write_file(staging / self.LOG, _log_text([*rows, row]).encode())
        fsync_dir(staging)
        files = dict(rec.get("files", {}))
        for p in sorted(staging.iterdir()):
            files[p.name] = _digest(p)
        new = {**self.read_status(), **status, "epochs_done": epoch,
               "commit": {"epoch": epoch, "staging": staging.name, "files": files, "config": settings}}
        self._write_status(new)  # the commit point
        self._apply(staging)

    def _apply(self, staging: Path) -> None:
        for p in sorted(staging.iterdir()):
            rename(p, self.path / p.name)
        fsync_dir(self.path)
        remove_tree(staging)

    # --- other status changes ---------------------------------------------------------------------------------
    def mark_failed(self, message: str) -> None:
        """``status: failed`` with the reason (the last commit, if any, stays usable)."""
        if self.status_file.is_file():
            self.update_status(status="failed", message=message)

    def record_move(self, old: TrainConfig, new: TrainConfig, changed: dict[str, Any]) -> None:
        """A resumed run continues elsewhere (data folder, device, workers): append the move, save the config."""
        status = self.read_status()
        moves = list(status.get("moves", []))
        moves.append({"after_epoch": self.epochs_done(), **{k: [getattr(old, k), v] for k, v in changed.items()}})
        self.update_status(moves=moves)
        self.save_config(new)


def _without_added_defaults(now: dict[str, Any], want: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``now`` without the keys (also inside mappings such as ``augment``) that ``want`` lacks and that hold their
    default: a ``config.yaml`` rewritten by a newer version (a resume that moved the run) gains the settings added
    since, at the defaults the run trained with; that is not an edit."""
    out = {}
    for k, v in now.items():
        if k not in want:
            if k in defaults and v == defaults[k]:
                continue
        elif isinstance(v, dict) and isinstance(want[k], dict) and isinstance(defaults.get(k), dict):
            v = _without_added_defaults(v, want[k], defaults[k])
        out[k] = v
    return out


def _log_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
    return buf.getvalue()


