"""Accumulate per-image segmentation scores over a whole evaluation set, independent of batch size.

The meter stores one record per image (confusion counts, optionally HD95, and an id) and reduces only in
:meth:`SegmentationMeter.compute`, so splitting the same images into batches of 1, 3 or all of them gives identical
results. This is what the official UNeXt code gets wrong: it pools intersection and union over each batch and then
averages those batch scores (see ``docs/metrics.md``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from scunext.metrics.confusion import ConfusionCounts, as_binary_masks, confusion_counts, refuse_trailing_channel
from scunext.metrics.distance import OneEmpty, Spacing, hd95
from scunext.metrics.overlap import EMPTY_POLICIES, METRIC_NAMES, EmptyPolicy, nanmean_images, overlap_scores

__all__ = ["SegmentationMeter", "OUTPUT_TYPES"]

logger = logging.getLogger(__name__)

OUTPUT_TYPES: tuple[str, ...] = ("logits", "probs", "mask")


def _as_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach()
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1) and number of non-NaN entries of a 1-D array; NaN where undefined."""
    valid = values[~np.isnan(values)]
    n = int(valid.size)
    mean = float(valid.mean()) if n else math.nan
    std = float(valid.std(ddof=1)) if n > 1 else math.nan
    return mean, std, n


def _class_mean(scores: torch.Tensor) -> np.ndarray:
    """Per-image score averaged over classes (NaN classes ignored), shape ``(B,)``."""
    return nanmean_images(scores.T).numpy()


class SegmentationMeter:
    """Per-image segmentation metrics accumulated over batches.

    Model outputs are turned into masks as follows. ``output_type="logits"``: sigmoid, then ``> threshold`` for one
    class (or ``multilabel=True``), otherwise argmax over the class channel. ``"probs"``: the same without the sigmoid.
    ``"mask"``: used as given (bool/0-1 masks, or an integer label map when ``num_classes > 1``).

    Targets are binary masks ``(B, H, W)`` / ``(B, C, H, W)``, or for ``num_classes > 1`` an integer label map
    ``(B, H, W)`` / ``(B, 1, H, W)``, which is one-hot encoded.

    Args:
        num_classes: number of output channels ``C`` (each class is scored as a binary mask).
        output_type: ``"logits"`` (default), ``"probs"`` or ``"mask"``.
        threshold: probability threshold for one class or multilabel outputs (a prediction is positive if ``p >
            threshold``); unused for argmax.
        multilabel: with ``num_classes > 1``, threshold every channel independently instead of taking the argmax.
        empty: empty-mask policy of the overlap scores, ``"one"`` or ``"nan"`` (see :mod:`scunext.metrics.overlap`).
        compute_hd95: also compute HD95 per image (slower: a distance transform per image and class).
        hd95_one_empty: HD95 when exactly one mask is empty: ``"nan"`` (excluded, counted in ``n_undefined``) or
            ``"max"`` (the image diagonal).
        spacing: pixel size for HD95 (number or ``(row, column)``); ``None`` reports pixels.

    Example:
        >>> meter = SegmentationMeter(compute_hd95=True)
        >>> for images, masks, names in loader:  # doctest: +SKIP
        ...     meter.update(model(images), masks, ids=names)
        >>> meter.compute()["dice"]["per_image_mean"]  # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes: int = 1,
        *,
        output_type: str = "logits",
        threshold: float = 0.5,
        multilabel: bool = False,
        empty: EmptyPolicy = "one",
        compute_hd95: bool = False,
        hd95_one_empty: OneEmpty = "nan",
        spacing: Spacing = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; valid: {', '.join(OUTPUT_TYPES)}")
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"unknown empty policy {empty!r}; valid: {', '.join(EMPTY_POLICIES)}")
        if hd95_one_empty not in ("nan", "max"):
            raise ValueError(f"hd95_one_empty must be 'nan' or 'max', got {hd95_one_empty!r}")
        self.num_classes = num_classes
        self.output_type = output_type
        self.threshold = float(threshold)
        self.multilabel = bool(multilabel)
        self.empty = empty
        self._warned_probs = False
        self.compute_hd95 = bool(compute_hd95)
        self.hd95_one_empty = hd95_one_empty
        self.spacing = spacing
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every accumulated image."""
        # per-image rows as plain Python lists, not small tensors: thousands of long-lived tensors between the large
        # temporary masks of each image kept glibc's heap from shrinking (evaluate grew ~36 MB a 1536x1536 image)
        self._counts: list[list[list[list[int]]]] = []  # per batch: [tp, fp, fn, tn], each (B, C) as lists
        self._hd95: list[list[list[float]]] = []  # per batch: (B, C)
        self._ids: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def counts(self) -> ConfusionCounts:
        """All accumulated per-image counts, each field of shape ``(N, C)`` (CPU, int64)."""
        if not self._counts:
            raise RuntimeError("SegmentationMeter is empty: call update() first")
        fields = zip(*self._counts)  # tp of every batch, then fp, ...
        rows = ([row for batch in f for row in batch] for f in fields)
        return ConfusionCounts(*(torch.tensor(r, dtype=torch.int64) for r in rows))

    def _hd95_tensor(self) -> torch.Tensor:
        return torch.tensor([row for batch in self._hd95 for row in batch], dtype=torch.float64)

    # ------------------------------------------------------------- conversion
    def _labels_to_masks(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.dim() == 4:
            x = x[:, 0]
        if x.is_floating_point():
            if bool((x != x.round()).any()):
                raise ValueError(f"{name} label map must hold integer class indices")
        elif x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} label map must hold integer class indices, got dtype {x.dtype}")
        x = x.long()
        if bool(((x < 0) | (x >= self.num_classes)).any()):
            raise ValueError(f"{name} label map has values outside [0, {self.num_classes - 1}]")
        return torch.nn.functional.one_hot(x, self.num_classes).permute(0, 3, 1, 2).bool()

    def _check_channels(self, m: torch.Tensor, name: str) -> torch.Tensor:
        if m.shape[1] != self.num_classes:
            raise ValueError(
                f"{name} has {m.shape[1]} channels but the meter was built for num_classes={self.num_classes}"
            )
        return m

    def binarize(self, output: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Model output -> bool masks ``(B, C, H, W)`` per ``output_type``, ``threshold`` and ``multilabel``."""
        x = _as_tensor(output, "output")
        if x.dim() not in (3, 4):
            raise ValueError(f"output must have shape (B, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        refuse_trailing_channel(x, "output")
        c = 1 if x.dim() == 3 else x.shape[1]
        if self.output_type == "mask":
            if self.num_classes > 1 and not self.multilabel and c == 1:
                return self._labels_to_masks(x, "output")
            return self._check_channels(as_binary_masks(x, "output"), "output")
        if x.dim() == 3:
            x = x.unsqueeze(1)
        self._check_channels(x, "output")
        if not x.is_floating_point():
            x = x.float()
        if not bool(torch.isfinite(x).all()):  # NaN > threshold is False: NaN logits were scored as background
            raise ValueError(f"output holds NaN or inf values ({self.output_type}); a diverged model?")
        if self.num_classes == 1 or self.multilabel:
            if self.output_type == "logits" and not self._warned_probs and x.numel() and x.min() >= 0 and x.max() <= 1:
                self._warned_probs = True  # sigmoid(p) > 0.5 for every p > 0: probabilities read as logits
                logger.warning("the meter reads its output as logits (output_type='logits'), but every value lies in "
                               "[0, 1]: if these are probabilities, build it with output_type='probs'")  # fmt: skip
            # float32 at least: in bfloat16, sigmoid(x) rounds to exactly 0.5 for 0 < x < ~0.008 (scored background)
            probs = torch.sigmoid(x.float()) if self.output_type == "logits" else x
            return probs > self.threshold
        idx = x.argmax(dim=1)
        return torch.nn.functional.one_hot(idx, self.num_classes).permute(0, 3, 1, 2).bool()

    def _target_masks(self, target: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = _as_tensor(target, "target")
        if t.dim() not in (3, 4):
            raise ValueError(f"target must have shape (B, H, W) or (B, C, H, W), got {tuple(t.shape)}")
        refuse_trailing_channel(t, "target")
        if self.num_classes > 1 and not self.multilabel and (t.dim() == 3 or t.shape[1] == 1):
            return self._labels_to_masks(t, "target")
        return self._check_channels(as_binary_masks(t, "target"), "target")

    # ----------------------------------------------------------------- update
    def update(
        self,
        output: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        ids: Sequence[Hashable] | None = None,
    ) -> ConfusionCounts:
        """Add one batch.

        Args:
            output: model output of shape ``(B, C, H, W)`` (logits, probabilities or masks, per ``output_type``).
            target: ground truth, see the class docstring.
            ids: one identifier per image (e.g. file names); default: running indices 0, 1, 2, ...

        Returns:
            The batch's per-image counts (CPU).
        """
        pred = self.binarize(output)
        tgt = self._target_masks(target)
        if pred.shape != tgt.shape:
            raise ValueError(f"output masks {tuple(pred.shape)} and target masks {tuple(tgt.shape)} differ in shape")
        b = pred.shape[0]
        if ids is None:
            start = len(self._ids)
            batch_ids: list[Hashable] = list(range(start, start + b))
        else:
            batch_ids = list(ids)
            if len(batch_ids) != b:
                raise ValueError(f"got {len(batch_ids)} ids for a batch of {b} images")
        counts = confusion_counts(pred, tgt).to("cpu")
        if b == 0:  # an empty last chunk adds nothing (its empty rows broke compute() with an IndexError)
            return counts
        self._counts.append([x.tolist() for x in counts])
        if self.compute_hd95:
            self._hd95.append(hd95(pred, tgt, spacing=self.spacing, one_empty=self.hd95_one_empty).tolist())
        self._ids.extend(batch_ids)
        return counts

    # ---------------------------------------------------------------- results
    def compute(self) -> dict[str, Any]:
        """Scores over every image seen since the last :meth:`reset`.

        Returns:
            ``{"n_images": N, "num_classes": C, "empty_policy": ..., "dice": {...}, "iou": {...}, "precision": {...},
            "recall": {...}, "specificity": {...}}`` where each metric holds ``per_image_mean`` (mean of the per-image
            scores: the paper's convention), ``per_image_std`` (sample std, ddof=1), ``pooled`` (one score from the
            counts summed over all images) and ``n_undefined`` (per-image NaNs, only with ``empty="nan"``). With
            ``compute_hd95``, ``"hd95"`` holds ``per_image_mean``, ``per_image_std``, ``per_image_median`` and
            ``n_undefined`` (images where exactly one mask is empty, excluded from the statistics). For ``C > 1``,
            per-image scores are averaged over classes first and each metric also has ``per_class`` lists; an
            image's HD95 is undefined when it is undefined for any class (a missed class must not improve it).
        """
        counts = self.counts
        n, c = counts.num_images, counts.num_classes
        per_image = overlap_scores(counts, "none", self.empty)
        pooled = overlap_scores(counts, "pooled", self.empty)
        result: dict[str, Any] = {"n_images": n, "num_classes": c, "empty_policy": self.empty}
        for name in METRIC_NAMES:
            mean, std, n_valid = _stats(_class_mean(per_image[name]))
            pooled_classes = pooled[name]
            valid = pooled_classes[~torch.isnan(pooled_classes)]
            entry: dict[str, Any] = {
                "per_image_mean": mean,
                "per_image_std": std,
                "pooled": float(valid.mean()) if valid.numel() else math.nan,
                "n_undefined": n - n_valid,
            }
            if c > 1:
                entry["per_class"] = {
                    "per_image_mean": nanmean_images(per_image[name]).tolist(),
                    "pooled": pooled_classes.tolist(),
                }
            result[name] = entry
        if self.compute_hd95:
            # Not _class_mean: a NaN class is a miss (exactly one mask empty), not an absent class, so the image
            # is undefined as a whole and counted in n_undefined instead of scoring on its other classes.
            values = self._hd95_tensor().mean(dim=1).numpy()
            mean, std, n_valid = _stats(values)
            valid = values[~np.isnan(values)]
            result["hd95"] = {
                "per_image_mean": mean,
                "per_image_std": std,
                "per_image_median": float(np.median(valid)) if valid.size else math.nan,
                "n_undefined": n - n_valid,
                "unit": "pixel" if self.spacing is None else "spacing unit",
            }
        return result

    def per_image(self) -> list[dict[str, Any]]:
        """One record per image in the order seen.

        Each record has ``id``, the five overlap scores, ``hd95`` (if computed), ``tp``/``fp``/``fn``/``tn`` and
        ``target_empty``/``pred_empty``. Values are scalars for one class and per-class lists otherwise.
        """
        counts = self.counts
        scores = overlap_scores(counts, "none", self.empty)
        columns: dict[str, torch.Tensor] = dict(scores)
        if self.compute_hd95:
            columns["hd95"] = self._hd95_tensor()
        columns.update(tp=counts.tp, fp=counts.fp, fn=counts.fn, tn=counts.tn)
        columns["target_empty"] = (counts.tp + counts.fn) == 0
        columns["pred_empty"] = (counts.tp + counts.fp) == 0
        single = counts.num_classes == 1
        records = []
        for i, image_id in enumerate(self._ids):
            rec: dict[str, Any] = {"id": image_id}
            for key, col in columns.items():
                row = col[i].tolist()
                rec[key] = row[0] if single else row
            records.append(rec)
        return records
