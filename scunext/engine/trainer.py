"""The training loop: Adam + cosine annealing (the paper's protocol), best-on-validation checkpoints, exact resume,
deterministic CPU runs, and DDP under ``torchrun``.

A run folder holds::

    config.yaml             the resolved config (the single source of truth for the run)
    split.json              the exact file lists (train / val / test) and how they were made
    run.json                status (running / finished / failed), epochs done, best validation score, timing
    log.csv                 one row per epoch: losses, validation Dice/IoU, learning rate, seconds
    curves.png              training curves
    best.safetensors/.json  weights + metadata of the best epoch on the validation part (never the test part)
    last.safetensors/.json  weights + metadata of the last finished epoch
    train_state.*           optimizer, scheduler, scaler and RNG states for ``--resume``
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from scunext.config import TrainConfig, load_config
from scunext.data import (
    DataError,
    SegmentationDataset,
    Split,
    build_train_transform,
    csv_split,
    discover_pairs,
    kfold_split,
    random_split,
    read_image,
    sample_dir,
    select_pairs,
)
from scunext.engine.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from scunext.engine.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from scunext.losses import DeepSupervisionLoss, build_loss
from scunext.metrics import SegmentationMeter
from scunext.models import create_model

__all__ = ["train", "TrainingError", "RunResult", "build_split", "resolve_data_root", "LOG_FIELDS"]

log = logging.getLogger(__name__)

LOG_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "epoch_seconds"]


class TrainingError(RuntimeError):
    """Training could not go on (NaN loss, resume of a finished run...). The message says what to do."""


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists already, missing for --resume, finished)."""


@dataclass
class RunResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_val_dice: float
    seconds: float


def resolve_data_root(cfg: TrainConfig) -> Path:
    """``cfg.data``, or the shipped ISIC 2017 sample when empty."""
    return Path(cfg.data) if cfg.data else sample_dir("isic2017")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_split(cfg: TrainConfig, ids: list[str], data_root: Path) -> Split:
    """The run's split; a validation part for model selection always comes from the training side."""
    if cfg.max_images and len(ids) > cfg.max_images:
        ids = sorted(random.Random(cfg.seed).sample(sorted(ids), cfg.max_images))
    if cfg.split == "random":
        split = random_split(ids, test_fraction=cfg.test_fraction, seed=cfg.seed)
        split = split.with_carved_validation(cfg.val_fraction, seed=cfg.seed)
    elif cfg.split == "kfold":
        split = kfold_split(ids, folds=cfg.folds, fold=cfg.fold, seed=cfg.seed)
        split = split.with_carved_validation(cfg.val_fraction, seed=cfg.seed)
    else:
        csv_path = Path(cfg.split_csv) if cfg.split_csv else data_root / "splits.csv"
        split = csv_split(csv_path, cfg.split_column, ids=ids)
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
    return split


def _infer_in_channels(pairs) -> int:
    img = read_image(pairs[0].image)
    return 1 if img.ndim == 2 or img.shape[2] == 1 else 3


class _Run:
    """State of one training run (kept small: the loop lives in :func:`train`)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist_info: DistInfo, device: torch.device) -> None:
        self.cfg, self.run_dir, self.dist, self.device = cfg, run_dir, dist_info, device

    def write_status(self, **fields: Any) -> None:
        if not self.dist.is_main:
            return
        path = self.run_dir / "run.json"
        status = json.loads(path.read_text()) if path.is_file() else {}
        status.update(fields)
        atomic_write_text(path, json.dumps(status, indent=2))


def _read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} is not a scunext run folder (no run.json)")
    return json.loads(path.read_text())


def _prepare_run_dir(cfg: TrainConfig | None, run_dir: Path, resume: bool) -> TrainConfig:
    """Validate the run folder for a new or resumed run; returns the config to use."""
    if resume:
        if not run_dir.is_dir():
            raise RunFolderError(f"cannot resume: run folder {run_dir} does not exist")
        status = _read_status(run_dir)
        if status.get("status") == "finished":
            raise RunFolderError(
                f"cannot resume: {run_dir} already finished {status.get('epochs_done')}/{status.get('epochs')} epochs"
            )
        if not (run_dir / "train_state.json").is_file():
            raise RunFolderError(f"cannot resume: {run_dir} has no finished epoch to resume from; start it again")
        return load_config(run_dir / "config.yaml")
    assert cfg is not None
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderError(f"run folder {run_dir} exists and is not empty; pick another --out or use --resume")
    return cfg


def _loader(ds, cfg: TrainConfig, shuffle: bool, dist_info: DistInfo, generator: torch.Generator | None):
    sampler = None
    if dist_info.enabled and shuffle:
        sampler = DistributedSampler(ds, num_replicas=dist_info.world_size, rank=dist_info.rank, seed=cfg.seed)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=cfg.num_workers,
        generator=generator,
        drop_last=False,
        pin_memory=False,
    )


def _plot_curves(run_dir: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        log.warning("matplotlib not installed: no curves.png (pip install 'scunext[train]')")
        return
    rows = list(csv.DictReader((run_dir / "log.csv").open()))
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
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, or None for fp32. ``auto`` = bfloat16 where the GPU supports it (fp32's range:
    ResUNet++'s activations reach ~3e4 at initialisation and overflowed float16's 65,504 on real images), else
    float16 with loss scaling."""
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

    ``resume_overrides`` may change *where* a resumed run continues, never *what* it trains: ``device``, ``data``
    (the same dataset in another folder; the saved split fixes the images) and ``num_workers``. The run's
    ``config.yaml`` is updated and each move is appended to ``run.json`` (``moves``), so a run started on a GPU can
    be finished on a CPU and say so.

    Launched by ``torchrun --nproc_per_node N`` the same call trains with DistributedDataParallel (gloo on CPU,
    NCCL on CUDA, a DistributedSampler per rank); only rank 0 writes files and shows progress.

    Raises:
        RunFolderError: ``run_dir`` exists (new run), or is missing / finished (resume).
        DataError: the data folder or split is unusable.
        TrainingError: the loss became NaN/inf (the last good checkpoint is kept).

    ``stop_after_epoch`` ends this call after that epoch and leaves the run resumable (a time-sliced budget, or a
    test of ``--resume``).
    """
    run_dir = Path(run_dir)
    if cfg is None and not resume:
        raise ValueError("a config is needed for a new run")
    cfg = _prepare_run_dir(cfg, run_dir, resume)
    old, moved = cfg, {}
    if resume and resume_overrides:
        cfg, moved = _move_run(cfg, resume_overrides)
    if cfg.data and not resume:  # the run records where its data is, independent of the working directory
        cfg = load_config(None, {**cfg.to_dict(), "data": str(Path(cfg.data).resolve())})
    dist_info, device = init_distributed(cfg.device)
    try:
        if moved and dist_info.is_main:
            status = _read_status(run_dir)
            moves = status.get("moves", [])
            change = {k: [getattr(old, k), v] for k, v in moved.items()}
            moves.append({"after_epoch": status.get("epochs_done", 0), **change})
            _Run(cfg, run_dir, dist_info, device).write_status(moves=moves)
            cfg.dump(run_dir / "config.yaml")
            log.info("run %s continues with %s", run_dir, ", ".join(f"{k}={v}" for k, v in moved.items()))
        return _train(cfg, run_dir, resume, show_progress, dist_info, device, stop_after_epoch)
    finally:
        cleanup_distributed()


#: config fields a resumed run may change (where it runs, not what it trains)
RESUME_OVERRIDES = ("device", "data", "num_workers")


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
    new = load_config(None, {**cfg.to_dict(), **changes})
    return new, {k: getattr(new, k) for k in changes if getattr(new, k) != getattr(cfg, k)}


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    show_progress: bool,
    dist_info: DistInfo,
    device: torch.device,
    stop_after_epoch: int | None = None,
) -> RunResult:
    data_root = resolve_data_root(cfg)
    pairs = discover_pairs(data_root)
    if cfg.in_channels == 0:
        cfg = load_config(None, {**cfg.to_dict(), "in_channels": _infer_in_channels(pairs)})
    if resume:
        split = Split.from_json(run_dir / "split.json")
    else:
        split = build_split(cfg, [p.id for p in pairs], data_root)
    barrier()
    if dist_info.is_main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(run_dir / "config.yaml")
        split.to_json(run_dir / "split.json")
    barrier()

    _seed_everything(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":  # fixed input size: let cuDNN pick the fastest kernels (not bit-deterministic)
        torch.backends.cudnn.benchmark = True
    model = create_model(cfg.model, in_channels=cfg.in_channels, num_classes=1, **cfg.model_args).to(device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    transform = build_train_transform(cfg.augment, seed=cfg.seed)
    common = dict(in_channels=cfg.in_channels, size=cfg.size, threshold_masks=cfg.threshold_masks,
                  intensity=cfg.intensity)
    train_ds = SegmentationDataset(select_pairs(pairs, split.train), transform=transform, **common)
    val_ds = SegmentationDataset(select_pairs(pairs, split.val), **common)
    gen = torch.Generator()
    train_loader = _loader(train_ds, cfg, True, dist_info, gen)
    val_loader = _loader(val_ds, cfg, False, DistInfo(), None)

    loss_fn = DeepSupervisionLoss(build_loss(cfg.loss, **cfg.loss_args))  # + auxiliary terms for deep supervision
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    dtype = amp_dtype(cfg, device)
    use_amp = dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)  # bfloat16 needs no loss scaling
    run = _Run(cfg, run_dir, dist_info, device)

    start_epoch, best_dice, best_epoch, elapsed = 1, -math.inf, 0, 0.0
    if resume:
        state = load_train_state(run_dir, optimizer, scheduler, scaler)
        model.load_state_dict(load_checkpoint(run_dir / "last")[1])
        start_epoch = int(state["epoch"]) + 1
        best_dice, best_epoch, elapsed = float(state["best_val_dice"]), int(state["best_epoch"]), state["seconds"]
        log.info("resuming %s at epoch %d/%d", run_dir, start_epoch, cfg.epochs)
    ddp_model = DistributedDataParallel(model) if dist_info.enabled else model
    run.write_status(status="running", epochs=cfg.epochs, model=cfg.model, data=str(data_root),
                     world_size=dist_info.world_size, device=str(device))  # fmt: skip
    if dist_info.is_main and not (run_dir / "log.csv").is_file():
        (run_dir / "log.csv").write_text(",".join(LOG_FIELDS) + "\n")

    epochs_bar = tqdm(
        range(start_epoch, cfg.epochs + 1), initial=start_epoch - 1, total=cfg.epochs, desc=f"{cfg.model}",
        unit="epoch", disable=not (show_progress and dist_info.is_main), leave=True,
    )  # fmt: skip
    last_plot = -math.inf
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        # per-epoch seeds: data order, worker seeds and augmentation depend only on (seed, epoch) -> exact resume
        gen.manual_seed(cfg.seed * 1_000_003 + epoch)
        if transform is not None and cfg.num_workers == 0:
            transform.set_random_seed((cfg.seed * 1_000_003 + epoch) % 2**32)
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
                msg = (f"loss became {float(loss.detach()):.4g} at epoch {epoch}, step {step}; stopped. The last good "
                       f"checkpoint (epoch {epoch - 1}) is kept in {run_dir}; try a lower --lr")  # fmt: skip
                run.write_status(status="failed", message=msg)
                raise TrainingError(msg)
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
        barrier()
        if dist_info.is_main:
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                row.update(validate(model, val_loader, loss_fn, device, use_amp, dtype))
                if row["val_dice"] > best_dice:
                    best_dice, best_epoch = row["val_dice"], epoch
                    save_checkpoint(run_dir / "best", model, cfg.model, epoch=epoch, val_dice=best_dice,
                                    selected_on="val", config=cfg.to_dict())  # fmt: skip
            elapsed += time.perf_counter() - t0
            row["epoch_seconds"] = round(time.perf_counter() - t0, 3)
            with (run_dir / "log.csv").open("a", newline="") as f:
                csv.DictWriter(f, LOG_FIELDS).writerow(
                    {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
                )
            save_checkpoint(run_dir / "last", model, cfg.model, epoch=epoch, config=cfg.to_dict())
            save_train_state(run_dir, optimizer, scheduler, scaler,
                             {"epoch": epoch, "best_val_dice": best_dice, "best_epoch": best_epoch,
                              "seconds": elapsed})  # fmt: skip
            run.write_status(epochs_done=epoch, best_epoch=best_epoch, best_val_dice=best_dice,
                             train_seconds=round(elapsed, 2))  # fmt: skip
            if epoch == cfg.epochs or time.perf_counter() - last_plot > 30:  # matplotlib costs ~0.3 s a call
                _plot_curves(run_dir)
                last_plot = time.perf_counter()
            post = {"loss": f"{row['train_loss']:.4f}"}
            if row["val_dice"] != "":
                post["val_dice"] = f"{row['val_dice']:.4f}"
            epochs_bar.set_postfix(post)
        barrier()
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < cfg.epochs:
            log.info("stopped after epoch %d as asked; continue with --resume %s", epoch, run_dir)
            return RunResult(run_dir, epoch, best_epoch, best_dice, elapsed)
    run.write_status(status="finished")
    log.info("finished %s: best validation Dice %.4f at epoch %d", run_dir, best_dice, best_epoch)
    return RunResult(run_dir, cfg.epochs, best_epoch, best_dice, elapsed)
