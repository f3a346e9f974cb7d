"""The training loop: Adam + cosine annealing (the paper's protocol), best-on-validation checkpoints, exact resume,
deterministic CPU runs, and DDP under ``torchrun``.

The run folder (layout, status, crash-consistent epoch commits, resume rules) belongs to
:class:`scunext.runs.RunDir`; this module only trains. Everything that can be checked is checked before the folder
is created (config, model and loss arguments, the training size, every image and mask of the split), so a mistake
leaves no folder; a failure after that marks the run ``failed`` with its reason.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm  # (not tqdm.auto: its asyncio class calls iter() on a DataLoader at once)

from scunext.config import ConfigError, TrainConfig, load_config
from scunext.data import (
    DataError,
    Pair,
    SegmentationDataset,
    Split,
    build_train_transform,
    csv_split,
    discover_pairs,
    kfold_split,
    random_split,
    select_pairs,
)
from scunext.data.check import check_pairs
from scunext.data.dataset import missing_ids
from scunext.engine.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    cleanup_distributed,
    cpu_has_native_bf16,
    init_distributed,
)
from scunext.errors import shown
from scunext.losses import DeepSupervisionLoss, build_loss
from scunext.metrics import SegmentationMeter
from scunext.models import create_model
from scunext.runs import (
    LOG_FIELDS,
    CheckpointError,
    RunDir,
    RunFolderError,
    data_root_of,
    load_checkpoint,
    load_train_state,
    load_weights_into,
    save_checkpoint,
    save_train_state,
)
from scunext.runs.durable import atomic_write

__all__ = ["train", "TrainingError", "RunFolderError", "RunResult", "build_split",
           "LOG_FIELDS", "validate", "amp_dtype"]  # fmt: skip

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training failed on its own (a loss or the weights stopped being finite). The message says what is kept."""


class PeerStopped(TrainingError):
    """Another process of a torchrun job stopped (killed, out of memory): this one cannot go on. Not a failure of
    the run: it stays at its last committed epoch and resumes with the same torchrun command and ``--resume``."""


class StartRefused(RunFolderError):
    """Under torchrun, process 0 (the writer) could not create or resume the run folder; the other processes stop
    with its reason instead of waiting for it."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: what gloo / NCCL say when another process of the job is gone
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def _peer_gone(exc: BaseException) -> bool:
    """``exc`` is gloo's / NCCL's report that another process of the torchrun job is gone."""
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _PEER_GONE)


@dataclass
class RunResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_val_dice: float
    seconds: float


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_split(cfg: TrainConfig, ids: list[str], data_root: Path) -> Split:
    """The run's split; a validation part for model selection always comes from the training side."""
    on_disk = ids
    if cfg.max_images and len(ids) > cfg.max_images:
        ids = sorted(random.Random(cfg.seed).sample(sorted(ids), cfg.max_images))
    elif cfg.max_images > len(ids):  # (split.json still records the setting, as for any other run)
        log.warning("max_images %d is more than the %d images of %s: all of them are used", cfg.max_images, len(ids),
                    data_root)  # fmt: skip
    if cfg.split == "random":
        split = random_split(ids, test_fraction=cfg.test_fraction, seed=cfg.seed)
        split = split.with_carved_validation(cfg.val_fraction, seed=cfg.seed)
    elif cfg.split == "kfold":
        split = kfold_split(ids, folds=cfg.folds, fold=cfg.fold, seed=cfg.seed)
        split = split.with_carved_validation(cfg.val_fraction, seed=cfg.seed)
    else:
        csv_path = Path(cfg.split_csv) if cfg.split_csv else data_root / "splits.csv"
        # the CSV is checked against every image on disk: ids that --max-images left out are neither "listed but
        # absent" (a warning and a count for files missing from the disk) nor unlisted
        split = csv_split(csv_path, cfg.split_column, id_column=cfg.split_id_column, ids=on_disk)
        if len(ids) < len(on_disk):
            chosen = set(ids)
            split = Split(*([i for i in part if i in chosen] for part in (split.train, split.val, split.test)),
                          split.description, external=[i for i in split.external if i in chosen])  # fmt: skip
        if not split.val:
            split = split.with_carved_validation(cfg.val_fraction, seed=cfg.seed)
    if cfg.max_train_images and len(split.train) > cfg.max_train_images:
        rng = random.Random(cfg.seed)
        keep = sorted(rng.sample(sorted(split.train), cfg.max_train_images))
        split = Split(keep, split.val, split.test, {**split.description, "max_train_images": cfg.max_train_images},
                      external=split.external)  # fmt: skip
    if cfg.max_images:
        split.description["max_images"] = cfg.max_images
    if not split.train or not split.val:
        raise DataError(f"split leaves no training or validation images ({split.counts()}); use more data")
    if not split.test:  # trains fine, but evaluate has nothing held out to score: say so now, not after training
        log.warning("the split has no test part (%s): `scunext evaluate RUN` needs --subset val or --data of another "
                    "dataset with --subset all", split.counts())  # fmt: skip
    return split


class _EpochOrder(Sampler[int]):
    """The training order of one epoch, drawn by :meth:`shuffle` from ``(seed, epoch)`` alone. (A RandomSampler
    draws its permutation from a generator that the loader also draws from, a different number of times with and
    without worker processes, so ``--num-workers`` changed the order.)"""

    def __init__(self, n: int) -> None:
        self.order = list(range(n))

    def shuffle(self, seed: int) -> None:
        self.order = torch.randperm(len(self.order), generator=torch.Generator().manual_seed(seed)).tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _check_single_image_batch(model: torch.nn.Module, cfg: TrainConfig, n_train: int) -> None:
    # n_train: the images one process trains on per epoch (under DDP its DistributedSampler share, padded)
    """Refuse, before the run folder exists, a training that will meet a batch of one image that the model cannot
    train on: BatchNorm over a 1x1 map (the UNeXt family's bottleneck at --size 32) has one value per channel and
    raised a traceback mid-epoch. Checked on a copy, with the RNG state kept, only when such a batch will come."""
    if cfg.batch_size != 1 and n_train % cfg.batch_size != 1:
        return
    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[]):
        try:
            probe(torch.zeros(1, cfg.in_channels or 3, cfg.size, cfg.size))
        except ValueError as exc:
            if "more than 1 value per channel" not in str(exc):
                raise
            where = "--batch-size 1" if cfg.batch_size == 1 else (
                f"{n_train} training images (per process) in batches of {cfg.batch_size} leave a last batch of one")
            raise ConfigError(f"{cfg.model} cannot train on a batch of one image at size {cfg.size} (BatchNorm over a "
                              f"1x1 map) and {where}; use a larger --size or another --batch-size") from None


def _quiet_exit(signum, frame) -> None:  # noqa: ANN001
    os._exit(0)


def _worker_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl+C to the main process and end quietly (exit status 0) on SIGTERM: killed by
    the signal, as PyTorch's own handler lets a worker be when the signal does not come from its parent, it made
    the main process raise "DataLoader worker exited unexpectedly" in place of the interruption, and the run was
    marked failed (the experiment runner then skipped it for good). Ignoring SIGTERM instead hung the exit of a
    finished run: Python's multiprocessing stops leftover workers with SIGTERM and waits for them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _quiet_exit)


def _loader(ds, cfg: TrainConfig, shuffle: bool, dist_info: DistInfo, generator: torch.Generator | None):
    """A shuffled loader takes its order from an :class:`_EpochOrder` (DistributedSampler under DDP); the loader's
    own draws (worker seeds) come from ``generator``, not the global RNG."""
    sampler = None
    if dist_info.enabled and shuffle:
        sampler = DistributedSampler(ds, num_replicas=dist_info.world_size, rank=dist_info.rank, seed=cfg.seed)
    elif shuffle:
        sampler = _EpochOrder(len(ds))
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=cfg.num_workers,
        generator=generator,
        drop_last=False,
        pin_memory=False,
        worker_init_fn=_worker_stop_signals if cfg.num_workers else None,
    )


def _plot_curves(run: RunDir) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        log.warning("matplotlib not installed: no curves.png (pip install 'scunext[train]')")
        return
    rows = run.read_log()
    if not rows:
        return
    ep = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(ep, [float(r["train_loss"]) for r in rows], label="train")
    val = [(int(r["epoch"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    if val:
        ax1.plot(*zip(*val), label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    dice = [(int(r["epoch"]), float(r["val_dice"])) for r in rows if r["val_dice"]]
    if dice:
        ax2.plot(*zip(*dice), label="Dice (per-image mean)")
        iou = [(int(r["epoch"]), float(r["val_iou"])) for r in rows if r["val_iou"]]
        ax2.plot(*zip(*iou), label="IoU (per-image mean)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation score")
    ax2.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(run.curves_file, buf.getvalue())


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, or None for fp32. ``auto`` = bfloat16 where the GPU supports it (fp32's range:
    ResUNet++'s activations reach ~3e4 at initialisation and overflowed float16's 65,504 on real images), else
    float16 with loss scaling. On the CPU: bfloat16 with ``cpu_amp`` (``amp``/``amp_dtype`` are CUDA settings), else
    fp32."""
    if device.type == "cpu":
        return torch.bfloat16 if cfg.cpu_amp else None
    if not cfg.amp or device.type != "cuda":
        return None
    if cfg.amp_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.amp_dtype]


@torch.no_grad()
def validate(model, loader, loss_fn, device, use_amp: bool, dtype: torch.dtype | None = None) -> dict[str, float]:
    """Validation loss and per-image mean Dice / IoU of ``model`` over ``loader``."""
    model.eval()
    meter = SegmentationMeter(num_classes=1)
    total, n = 0.0, 0
    for batch in loader:
        x, y = batch["image"].to(device), batch["mask"].to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float16, enabled=use_amp):
            logits = model(x)
        logits = logits.float()
        if not bool(torch.isfinite(logits).all()):  # the caller stops the run on a non-finite validation loss
            nan = float("nan")
            return {"val_loss": nan, "val_dice": nan, "val_iou": nan}
        total += float(loss_fn(logits, y)) * x.shape[0]
        n += x.shape[0]
        meter.update(logits.cpu(), y.cpu(), ids=list(batch["id"]))
    scores = meter.compute()
    return {"val_loss": total / max(n, 1), "val_dice": scores["dice"]["per_image_mean"],
            "val_iou": scores["iou"]["per_image_mean"]}  # fmt: skip


def train(
    cfg: TrainConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    stop_after_epoch: int | None = None,
    resume_overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Train (or resume) a run in ``run_dir``; returns where it ended.

    Before the folder is created (or, on resume, before anything in it changes) the config, the model and loss
    arguments, the training size and every image and mask of the split are checked, so a mistake leaves nothing
    behind. An existing folder is refused unless it holds a failed run that finished no epoch (it is replaced).

    ``resume_overrides`` may change *where* a resumed run continues, never *what* it trains: ``device``, ``data``
    (the same dataset in another folder; the saved split fixes the images) and ``num_workers``. The run's
    ``config.yaml`` is updated and each move is appended to ``run.json`` (``moves``), once the new place checked.

    Each finished epoch is committed as a whole (:meth:`RunDir.commit_epoch`): a crash at any instant leaves the
    folder at the previous or the new epoch, and resume continues bit-identically. An epoch whose training or
    validation loss or whose weights are not finite is never committed.

    Launched by ``torchrun --nproc_per_node N`` the same call trains with DistributedDataParallel (gloo on CPU,
    NCCL on CUDA, a DistributedSampler per rank); only rank 0 writes files and shows progress.

    Rank 0 holds the folder's writer lock from creation (or resume) to the end of the call, so a second process
    cannot resume or replace the run meanwhile (:class:`RunInUseError`); a crash releases it.

    Raises:
        RunFolderError: ``run_dir`` exists (new run), or is missing / finished / damaged (resume);
            :class:`RunInUseError` when another process is training it.
        DataError, ConfigError: the data or an option is unusable (nothing written).
        CheckpointError: a checkpoint of the run is corrupt or of another model.
        TrainingError: a loss or the weights became NaN/inf (the last good epoch, if any, is kept).

    ``stop_after_epoch`` ends this call after that epoch and leaves the run resumable (a time-sliced budget, or a
    test of ``--resume``).
    """
    run = RunDir(run_dir)
    if cfg is None and not resume:
        raise ValueError("a config is needed for a new run")
    moved: dict[str, Any] = {}
    if resume:
        cfg = old = run.check_resumable()
        if resume_overrides:
            cfg, moved = _move_run(cfg, resume_overrides)
    else:
        assert cfg is not None
        # through load_config whatever the caller built (a TrainConfig(...) in Python skipped the checks and types:
        # epochs=0 "finished" with no checkpoint); the run records where its data is, independent of the cwd
        data = {"data": str(Path(cfg.data).resolve())} if cfg.data else {}
        cfg = load_config(None, {**cfg.to_dict(), **data})
        cfg.check_split_settings()
        run.check_new()
    dist_info, device = init_distributed(cfg.device)
    try:
        if resume:  # before anything is written: a refused resume leaves the folder as it was
            _check_world_size(run, dist_info.world_size, cfg.batch_size)
        plan = _plan(cfg, run, resume, show_progress and dist_info.is_main, dist_info.world_size)
        refusal: Exception | None = None
        if dist_info.is_main:
            try:
                if resume:
                    start = run.prepare_resume()
                    if moved:
                        run.record_move(old, plan.cfg, moved)
                        log.info("run %s continues with %s", run.path, ", ".join(f"{k}={v}" for k, v in moved.items()))
                    log.info("resuming %s after epoch %d/%d", run.path, start, plan.cfg.epochs)
                else:
                    run.create(plan.cfg, plan.split, model=plan.cfg.model, data=str(plan.data_root))
            except Exception as exc:
                refusal = exc
        # every process learns whether process 0 could start the run: with a bare barrier the others waited for it
        # and, when it exited with its one-line refusal (e.g. a damaged checkpoint), failed with a gloo traceback
        try:
            refused = broadcast_object(None if refusal is None else _first_line(refusal))
        except RuntimeError as exc:  # a process stopped before this point (its own refusal in _plan, a kill)
            if refusal is not None or not _peer_gone(exc):
                raise refusal or exc  # noqa: B904 (process 0's own reason first)
            if dist_info.is_main and not resume:  # the folder it just created: replaceable by the same command
                run.mark_failed("another process of the torchrun job stopped before the first epoch")
            raise StartRefused("another process of this torchrun job stopped before the run started (its own "
                               "message says why); nothing was trained") from None  # fmt: skip
        if refusal is not None:
            raise refusal
        if refused:
            raise StartRefused(f"process 0 of this torchrun job did not start the run: {refused}")
        try:
            return _train(plan, run, resume, show_progress, dist_info, device, stop_after_epoch)
        except (TrainingError, RunFolderError, CheckpointError):
            raise  # a NaN stop already says failed in run.json; a refused resume leaves the folder as it was
        except Exception as exc:
            if dist_info.enabled and _peer_gone(exc):
                raise PeerStopped(f"another process of this torchrun job stopped ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0][-160:]}); {run.path} stays at its last "
                                  "committed epoch: run the same torchrun command with --resume") from exc  # fmt: skip
            if dist_info.is_main:
                run.mark_failed(f"{type(exc).__name__}: {_first_line(exc)}")
            raise
    finally:
        run.release()  # the writer lock taken by create / prepare_resume (rank 0)
        cleanup_distributed()


def _stopped_loss(own: float) -> str:
    """What the stop message says the loss became: this process's own value, or, under DDP, that another process's
    went non-finite (this one's is finite; it used to be reported as the reason)."""
    return f"{own:.4g}" if not math.isfinite(own) else "non-finite on another process"


def _check_world_size(run: RunDir, world_size: int, batch_size: int) -> None:
    """Each process draws ``batch_size`` images: another process count is another global batch and data order."""
    saved = run.read_status().get("world_size")
    if run.epochs_done() >= 1 and isinstance(saved, int) and not isinstance(saved, bool) and saved != world_size:
        how = f"torchrun --nproc_per_node {saved}" if saved > 1 else "without torchrun"
        raise RunFolderError(f"cannot resume: {run.path} trained with {saved} process(es) (a global batch of "
                             f"{saved} x {batch_size}), this is {world_size}; resume with the same number ({how})")


#: config fields a resumed run may change (where it runs, not what it trains)
RESUME_OVERRIDES = RunDir.MOVABLE


def _move_run(cfg: TrainConfig, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The config of a resumed run with its *where* fields changed, and ``{field: new value}`` of what changed."""
    bad = sorted(k for k, v in overrides.items() if v is not None and k not in RESUME_OVERRIDES)
    if bad:
        raise ValueError(f"a resumed run keeps its config; only {', '.join(RESUME_OVERRIDES)} can change, "
                         f"not {', '.join(bad)}")  # fmt: skip
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("data"):
        changes["data"] = str(Path(changes["data"]).resolve())
        if not Path(changes["data"]).is_dir():
            raise FileNotFoundError(f"{changes['data']}: dataset folder not found")
    load_config(None, changes)  # the new values checked as new settings (e.g. --num-workers within its bound)
    new = load_config(None, {**cfg.to_dict(), **changes}, saved=True)  # the run's own settings as saved
    return new, {k: getattr(new, k) for k in changes if getattr(new, k) != getattr(cfg, k)}


@dataclass
class _Plan:
    """Everything a run needs that can be checked before a file is written."""

    cfg: TrainConfig
    data_root: Path
    pairs: list[Pair]
    split: Split
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    transform: Any


def _plan(cfg: TrainConfig, run: RunDir, resume: bool, show_progress: bool, world_size: int = 1) -> _Plan:
    """Check the data and every option; build the model, loss and augmentation. Writes nothing."""
    data_root = data_root_of(cfg)
    pairs = discover_pairs(data_root, unpaired="skip" if resume else "error")  # resume: split.json has the ids
    if resume:
        split = run.load_split()
        missing = missing_ids(pairs, split.ids)
        if missing:
            raise DataError(f"{len(missing)} of the {len(split.ids)} images of this run are not in {data_root} "
                            f"(e.g. {missing[0]}); is it the data the run was trained on?")  # fmt: skip
    else:
        split = build_split(cfg, [p.id for p in pairs], data_root)
    used = select_pairs(pairs, split.ids)
    found = check_pairs(used, threshold_masks=cfg.threshold_masks, show_progress=show_progress)
    if cfg.in_channels == 0:
        cfg = load_config(None, {**cfg.to_dict(), "in_channels": found.in_channels}, saved=resume)
    _seed_everything(cfg.seed)
    try:
        model = create_model(cfg.model, in_channels=cfg.in_channels, num_classes=1, **cfg.model_args)
    except TypeError as exc:
        raise ConfigError(f"model_args {shown(cfg.model_args)} do not fit {cfg.model}: {exc}") from None
    except (RuntimeError, MemoryError) as exc:  # e.g. widths of 100,000: "tried to allocate 360000000000 bytes"
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"model_args {shown(cfg.model_args)}: {cfg.model} cannot be built in memory "
                          f"({exc.__class__.__name__}: {first})") from None
    divisor = getattr(model, "input_divisor", 1)
    if cfg.size % divisor:
        fit = max(divisor, round(cfg.size / divisor) * divisor)
        raise ConfigError(f"size {cfg.size} does not fit {cfg.model}: it needs a multiple of {divisor} "
                          f"(e.g. --size {fit})")  # fmt: skip
    if world_size > len(split.train):  # DistributedSampler would pad with repeats: an image trained twice an epoch
        raise ConfigError(f"{world_size} processes but {len(split.train)} training image(s): each process needs one "
                          f"of its own; use at most torchrun --nproc_per_node {len(split.train)}")  # fmt: skip
    _check_single_image_batch(model, cfg, -(-len(split.train) // world_size))  # each rank's share (padded)
    try:
        loss_fn = DeepSupervisionLoss(build_loss(cfg.loss, **cfg.loss_args))  # + auxiliary terms (deep supervision)
    except TypeError as exc:
        raise ConfigError(f"loss_args {shown(cfg.loss_args)} do not fit loss {cfg.loss!r}: {exc}") from None
    transform = build_train_transform(cfg.augment, seed=cfg.seed)
    return _Plan(cfg, data_root, pairs, split, model, loss_fn, transform)


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _stop(run: RunDir, dist_info: DistInfo, what: str, epoch: int, good_epoch: int) -> TrainingError:
    """Mark the run failed and build the error: ``what`` happened in ``epoch``; ``good_epoch`` is the last commit."""
    if good_epoch:
        kept = f"the last good checkpoint (epoch {good_epoch}, finite losses) is kept in {run.path}"
    else:
        kept = "no epoch ended with finite losses, so no checkpoint is kept"
    msg = f"{what}; stopped: {kept}. Try a lower --lr"
    if dist_info.is_main:
        run.mark_failed(msg)
    return TrainingError(msg)


def _train(
    plan: _Plan,
    run: RunDir,
    resume: bool,
    show_progress: bool,
    dist_info: DistInfo,
    device: torch.device,
    stop_after_epoch: int | None = None,
) -> RunResult:
    cfg, split, pairs, loss_fn, transform = plan.cfg, plan.split, plan.pairs, plan.loss_fn, plan.transform
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":  # fixed input size: let cuDNN pick the fastest kernels (not bit-deterministic)
        torch.backends.cudnn.benchmark = True
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = plan.model.to(device).to(memory_format=layout)
    common = dict(in_channels=cfg.in_channels, size=cfg.size, threshold_masks=cfg.threshold_masks,
                  intensity=cfg.intensity)
    train_ds = SegmentationDataset(select_pairs(pairs, split.train), transform=transform,
                                   intensity_before_augment=cfg.intensity_before_augment, **common)
    val_ds = SegmentationDataset(select_pairs(pairs, split.val), **common)
    gen = torch.Generator()
    train_loader = _loader(train_ds, cfg, True, dist_info, gen)
    val_loader = _loader(val_ds, cfg, False, DistInfo(), None)

    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    dtype = amp_dtype(cfg, device)
    use_amp = dtype is not None
    if dtype is not None and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("--cpu-amp: this CPU has no native bfloat16 (AVX512-BF16 / AMX), so training will be slower "
                    "than float32, not faster")  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)  # bfloat16 needs no loss scaling

    start_epoch, best_dice, best_epoch, elapsed = 1, -math.inf, 0, 0.0
    if resume and run.epochs_done() > 0:  # (none done: the run starts again, the same as new)
        state_stem, last_stem = run.train_state_stem, run.checkpoint_stem("last")
        state = load_train_state(state_stem, optimizer, scheduler, scaler)
        meta, weights = load_checkpoint(last_stem)
        RunDir.check_checkpoint_matches(meta, cfg, last_stem)
        load_weights_into(model, weights, f"{cfg.model} {cfg.model_args or ''}".strip())
        try:
            start_epoch = int(state["epoch"]) + 1
            best_dice, best_epoch, elapsed = float(state["best_val_dice"]), int(state["best_epoch"]), state["seconds"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{state_stem}.json: corrupt or incomplete training state ({exc})") from None
        if int(meta.get("epoch", -1)) != start_epoch - 1:
            raise RunFolderError(f"cannot resume: {run.path}: last.json is epoch {meta.get('epoch')} but "
                                 f"train_state.json epoch {start_epoch - 1}; start the run again")  # fmt: skip
    good_epoch = start_epoch - 1
    ddp_model = DistributedDataParallel(model) if dist_info.enabled else model
    if dist_info.is_main:
        run.update_status(status="running", epochs=cfg.epochs, model=cfg.model, data=str(plan.data_root),
                          world_size=dist_info.world_size, device=str(device))  # fmt: skip

    epochs_bar = tqdm(
        range(start_epoch, cfg.epochs + 1), initial=start_epoch - 1, total=cfg.epochs, desc=f"{cfg.model}",
        unit="epoch", disable=not (show_progress and dist_info.is_main), leave=True,
    )  # fmt: skip
    last_plot = time.perf_counter()  # curves.png: at the end and every 30 s (matplotlib costs ~0.3-1 s a call)
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        # per-epoch seeds: data order and each sample's augmentation depend only on (seed, epoch, sample) -> exact
        # resume, and the same run whatever --num-workers (the workers' own seeds are not used for augmentation,
        # and the order has a generator of its own)
        epoch_seed = cfg.seed * 1_000_003 + epoch
        gen.manual_seed(epoch_seed)
        if isinstance(train_loader.sampler, _EpochOrder):
            train_loader.sampler.shuffle(epoch_seed)
        train_loader.dataset.augment_seed = epoch_seed % 2**32
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        ddp_model.train()
        total, n = 0.0, 0
        batches = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
                       disable=not (show_progress and dist_info.is_main))  # fmt: skip
        for step, batch in enumerate(batches):
            x, y = batch["image"].to(device).contiguous(memory_format=layout), batch["mask"].to(device)
            with torch.autocast(device.type, dtype=dtype or torch.float16, enabled=use_amp):
                logits = ddp_model(x)
            loss = loss_fn(logits, y)  # the wrapper casts to float32
            finite = torch.isfinite(loss.detach()).float()
            if dist_info.enabled:
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if finite.item() < 1:
                raise _stop(run, dist_info, f"the training loss became {_stopped_loss(float(loss.detach()))} at "
                            f"epoch {epoch}, step {step}", epoch, good_epoch)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * x.shape[0]
            n += x.shape[0]
            batches.set_postfix(loss=f"{total / n:.4f}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": "", "val_dice": "", "val_iou": "", "lr": lr}
        if not _all_finite(model):  # same weights on every rank under DDP: the same decision everywhere
            raise _stop(run, dist_info, f"the weights stopped being finite (NaN/inf) in epoch {epoch}",
                        epoch, good_epoch)  # fmt: skip
        barrier()
        ok = torch.ones(1)
        if dist_info.is_main and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            row.update(validate(model, val_loader, loss_fn, device, use_amp, dtype))
            ok[0] = float(math.isfinite(row["val_loss"]))
        if dist_info.enabled:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            value = f"{row['val_loss']:.4g}" if isinstance(row["val_loss"], float) else "non-finite"  # rank 0 knows
            raise _stop(run, dist_info, f"the validation loss became {value} at epoch {epoch}", epoch, good_epoch)
        if dist_info.is_main:
            writers = {}
            if row["val_dice"] != "" and row["val_dice"] > best_dice:
                best_dice, best_epoch = row["val_dice"], epoch
                meta = dict(epoch=epoch, val_dice=best_dice, selected_on="val", config=cfg.to_dict())
                writers["best"] = lambda stem, m=meta: save_checkpoint(stem, model, cfg.model, atomic=False, **m)
            elapsed += time.perf_counter() - t0
            row["epoch_seconds"] = round(time.perf_counter() - t0, 3)
            last = dict(epoch=epoch, config=cfg.to_dict())
            writers["last"] = lambda stem, m=last: save_checkpoint(stem, model, cfg.model, atomic=False, **m)
            extra = {"epoch": epoch, "best_val_dice": best_dice, "best_epoch": best_epoch, "seconds": elapsed}
            writers[RunDir.TRAIN_STATE] = lambda stem, e=extra: save_train_state(stem, optimizer, scheduler, scaler,
                                                                                 e, atomic=False)  # fmt: skip
            run.commit_epoch(epoch, writers, row, cfg, best_epoch=best_epoch, best_val_dice=best_dice,
                             train_seconds=round(elapsed, 2))  # fmt: skip
            if epoch == cfg.epochs or time.perf_counter() - last_plot > 30:
                _plot_curves(run)
                last_plot = time.perf_counter()
            post = {"loss": f"{row['train_loss']:.4f}"}
            if row["val_dice"] != "":
                post["val_dice"] = f"{row['val_dice']:.4f}"
            epochs_bar.set_postfix(post)
        good_epoch = epoch
        barrier()
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < cfg.epochs:
            log.info("stopped after epoch %d as asked; continue with --resume %s", epoch, run.path)
            return RunResult(run.path, epoch, best_epoch, best_dice, elapsed)
    if dist_info.is_main:
        if not run.curves_file.is_file():  # killed while drawing it after the last commit
            _plot_curves(run)
        run.update_status(status="finished")
        # (rank 0 alone: the others do not track the best epoch, and logged -inf at epoch 0)
        log.info("finished %s: best validation Dice %.4f at epoch %d", run.path, best_dice, best_epoch)
    return RunResult(run.path, cfg.epochs, best_epoch, best_dice, elapsed)
