"""A per-prediction quality score from the model itself, and the ``review`` flag.

For each image the :class:`~scunext.deploy.predictor.Predictor` gives two probability maps: the image's, and that
of the horizontally flipped image, flipped back (flip test-time augmentation). From them, at the predictor's
threshold (mask = p > 0.5):

* ``agreement``: Dice between the two masks (1 when both are empty). A model that is sure of its answer gives
  the same mask for the mirror image.
* ``margin``: the mean of ``|2 p - 1|`` over the pixels either mask calls foreground (0 when both are empty):
  1 for a crisp mask, near 0 for a mask made of probabilities around 0.5.
* ``area_fraction``: predicted area / image area, scored against the areas of the run's *training* masks
  (1st to 99th percentile ``[lo, hi]``): ``area_term = 1`` inside, falling linearly in log-area to 0 at half of
  ``lo`` and at twice ``hi``.
* ``components``: connected components (8-connected) of the mask larger than 0.1 % of the image; ``component_term
  = 1`` up to the largest count seen in 99 % of the training masks, else ``that count / components``.

``score = agreement * margin * area_term * component_term``, in [0, 1]. ``review = score < threshold``, and a **hard
rule**: a mask smaller than ``min_area_fraction`` (half of the smallest-but-1 % training area), and an empty mask
under any calibration, is always flagged, whatever the threshold. The threshold is chosen on the run's validation
part, clean and under the acquisition-shift catalogue (:func:`choose_threshold`, ``scunext calibrate``) and stored as
``quality.json`` beside the checkpoint. A run without that file gets :meth:`QualityCalibration.default`: threshold 0.5
and an area prior that only knows that a mask below 0.1 % of the image is near-empty (documented in
docs/robustness.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import ndimage

from scunext.errors import is_finite_number, shown
from scunext.runs.run_dir import RunDir

if TYPE_CHECKING:  # pragma: no cover
    from scunext.deploy.predictor import Predictor

__all__ = [
    "QUALITY_FILE",
    "QualityCalibration",
    "Quality",
    "area_prior",
    "assess",
    "auroc",
    "choose_threshold",
    "THRESHOLD_RULES",
    "check_rule",
    "flipped_probabilities",
    "load_calibration",
    "quality_from_probabilities",
]

QUALITY_FILE = RunDir.QUALITY
QUALITY_FORMAT = "scunext-quality/1"
#: a quality file is a few hundred bytes; a larger file is a wrong path, not a calibration
MAX_QUALITY_FILE_BYTES = 1024 * 1024
MIN_COMPONENT_FRACTION = 0.001
"""Connected components smaller than this fraction of the image are not counted."""


@dataclass
class QualityCalibration:
    """What the score is compared against: the area prior of the training masks and the review threshold.

    Attributes:
        threshold: ``review = score < threshold``.
        area_lo, area_hi: 1st and 99th percentile of the training masks' area fraction.
        min_area_fraction: hard floor; a smaller mask is always flagged (near-empty).
        max_components: largest component count of 99 % of the training masks.
        source: ``"calibrated"`` (from data) or ``"default"`` (a run without ``quality.json``).
        stats: how the threshold was chosen (counts, AUROC on validation, ...), for the record.
        weights_sha256: SHA-256 of the weights file the threshold was chosen with (``scunext calibrate`` writes it;
            empty in files written before it existed, which cannot be checked): :meth:`check_weights`.
    """

    threshold: float = 0.5
    area_lo: float = 0.002
    area_hi: float = 1.0
    min_area_fraction: float = 0.001
    max_components: int = 1000
    source: str = "default"
    stats: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""

    def check_weights(self, run_dir: str | Path, checkpoint: str, file: str | Path, *, own: bool = False) -> None:
        """Refuse a calibration made for other weights than checkpoint ``checkpoint`` of ``run_dir``: its area prior
        and threshold belong to another model and would flag, or pass, this model's masks wrongly. ``file`` is the
        quality file, for the message; ``own``: it is the run's own ``quality.json`` (the hint is then to
        recalibrate the run)."""
        if not self.weights_sha256:  # written before the field existed: nothing to compare
            return
        sha256 = RunDir(run_dir).weights_sha256(checkpoint)
        if self.weights_sha256 == sha256:
            return
        if own:
            raise ValueError(f"{file}: calibrated for other weights (sha256 {self.weights_sha256[:12]}...) than the "
                             f"{checkpoint} checkpoint of {run_dir} ({sha256[:12]}...); recalibrate: scunext calibrate "
                             f"{run_dir} --checkpoint {checkpoint} --overwrite (or pass --quality FILE)")  # fmt: skip
        raise ValueError(f"{file}: calibrated for other weights (sha256 {self.weights_sha256[:12]}...) than "
                         f"{run_dir} ({sha256[:12]}...); calibrate this model for the site: scunext calibrate "
                         "... --site DIR --out FILE")  # fmt: skip

    @classmethod
    def default(cls) -> QualityCalibration:
        """For runs without ``quality.json``: threshold 0.5; only masks below 0.1 % of the image count as
        near-empty, and any area above 0.2 % and any component count pass the prior."""
        return cls()

    def to_json(self, path: str | Path) -> Path:
        from scunext.runs.durable import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps({"format": QUALITY_FORMAT, **asdict(self)}, indent=2))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> QualityCalibration:
        """Read a calibration; every value is checked (:meth:`check`), so a hand-edited or foreign file is refused
        in one line before any image is scored, never applied with a wrong or missing threshold."""
        path = Path(path)
        if path.exists() and not path.is_file():  # a folder, device or pipe (/dev/zero would be read forever)
            raise ValueError(f"{path}: not a readable quality file (not a regular file)")
        if path.is_file() and path.stat().st_size > MAX_QUALITY_FILE_BYTES:
            raise ValueError(f"{path}: not a quality file (larger than {MAX_QUALITY_FILE_BYTES // 1024} kB)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # (deep nesting, 5,000-digit ints)
            raise ValueError(f"{path}: not a readable quality file ({exc.__class__.__name__})") from None
        if not isinstance(data, dict) or data.pop("format", None) != QUALITY_FORMAT:
            raise ValueError(f"{path}: not a {QUALITY_FORMAT} file")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{path}: quality file without {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        cal = cls(**{k: v for k, v in data.items() if k in known})
        problem = cal.problem()
        if problem:
            raise ValueError(f"{path}: {problem}")
        return cal

    def problem(self) -> str | None:
        """What is wrong with these values (None: nothing): numbers that are not finite or out of range, an area
        prior whose bounds are swapped, a component count below 1."""

        for name in _REQUIRED:
            if not is_finite_number(getattr(self, name)):
                return f"{name} must be a finite number, got {shown(getattr(self, name))}"
        if not 0 <= self.threshold <= 1 + 1e-6:  # scores are in [0, 1]; just above 1 flags every image
            return f"threshold must be in [0, 1], got {self.threshold}"
        if not 0 <= self.min_area_fraction <= 1 or not 0 <= self.area_lo <= self.area_hi <= 1:
            return (f"the area prior needs 0 <= area_lo <= area_hi <= 1 and 0 <= min_area_fraction <= 1, got "
                    f"{self.area_lo}, {self.area_hi}, {self.min_area_fraction}")  # fmt: skip
        if self.max_components < 1 or self.max_components != int(self.max_components):
            return f"max_components must be a whole number >= 1, got {self.max_components}"
        if not isinstance(self.stats, dict) or not isinstance(self.source, str):
            return "source must be text and stats a mapping"
        if not isinstance(self.weights_sha256, str) or len(self.weights_sha256) not in (0, 64):
            return f"weights_sha256 must be a SHA-256 in hex, got {shown(self.weights_sha256)}"
        return None


#: the values a quality file must hold (a missing one would silently fall back to the uncalibrated default)
_REQUIRED = ("threshold", "area_lo", "area_hi", "min_area_fraction", "max_components")


def load_calibration(run_dir: str | Path, checkpoint: str = "best", file: str | Path | None = None
                     ) -> QualityCalibration:  # fmt: skip
    """The quality calibration of checkpoint ``checkpoint`` of ``run_dir``: ``file`` when given (a site calibration,
    ``--quality FILE``), else ``RUN_DIR/quality.json`` if present, else :meth:`QualityCalibration.default`. Either
    file is refused when it was calibrated for other weights (:meth:`QualityCalibration.check_weights`): a run's own
    ``quality.json`` copied from other weights, or calibrated with ``--checkpoint last`` and read with ``best``,
    flagged masks against another model's area prior and threshold."""
    path = Path(file) if file is not None else Path(run_dir) / QUALITY_FILE
    if file is None and not path.is_file():
        return QualityCalibration.default()
    cal = QualityCalibration.from_json(path)
    cal.check_weights(run_dir, checkpoint, path, own=file is None)
    return cal


@dataclass(frozen=True)
class Quality:
    """The quality of one prediction. ``score`` in [0, 1]; ``review`` True means "have a person check this"."""

    score: float
    review: bool
    area_px: int
    area_fraction: float
    agreement: float
    margin: float
    components: int
    reason: str

    def as_row(self) -> dict[str, Any]:
        """``{score, review, area_px}`` (plus the parts of the score) for CSV files and the serve API."""
        return {"score": round(self.score, 4), "review": self.review, "area_px": self.area_px,
                "agreement": round(self.agreement, 4), "margin": round(self.margin, 4),
                "area_fraction": round(self.area_fraction, 5), "components": self.components,
                "reason": self.reason}  # fmt: skip


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = int(a.sum()), int(b.sum())
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


def count_components(mask: np.ndarray, min_fraction: float = MIN_COMPONENT_FRACTION) -> int:
    """Number of 8-connected components of ``mask`` larger than ``min_fraction`` of the image."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= max(1.0, min_fraction * mask.size)).sum())


def _area_term(f: float, cal: QualityCalibration) -> float:
    if f <= 0:
        return 0.0
    if f < cal.area_lo:
        return max(0.0, 1.0 - math.log(cal.area_lo / f) / math.log(2.0))
    if f > cal.area_hi:
        return max(0.0, 1.0 - math.log(f / cal.area_hi) / math.log(2.0))
    return 1.0


def quality_from_probabilities(
    prob: np.ndarray, prob_flipped: np.ndarray, calibration: QualityCalibration, threshold: float = 0.5
) -> Quality:
    """The :class:`Quality` of one prediction from its probability map and the flipped-back map of the flipped
    image (both ``(H, W)`` in [0, 1], the same size)."""
    if prob.shape != prob_flipped.shape:
        raise ValueError(f"probability maps differ in shape: {prob.shape} vs {prob_flipped.shape}")
    mask, mask_f = prob > threshold, prob_flipped > threshold
    agreement = _dice(mask, mask_f)
    region = mask | mask_f
    margin = float(np.abs(2.0 * prob[region] - 1.0).mean()) if region.any() else 0.0
    area_px = int(mask.sum())
    frac = area_px / mask.size
    comps = count_components(mask)
    comp_term = 1.0 if comps <= calibration.max_components else calibration.max_components / comps
    score = float(np.clip(agreement * margin * _area_term(frac, calibration) * comp_term, 0.0, 1.0))
    reasons = []
    empty = area_px == 0  # flagged under any calibration (a hand-made file with floor 0 and threshold 0 passed it)
    if empty or frac < calibration.min_area_fraction:
        reasons.append("near-empty mask")
    elif not calibration.area_lo <= frac <= calibration.area_hi:
        reasons.append("area outside the training range")
    if comps > calibration.max_components:
        reasons.append(f"{comps} components")
    if score < calibration.threshold and not reasons:
        reasons.append("low confidence")
    review = bool(score < calibration.threshold or frac < calibration.min_area_fraction or empty)
    return Quality(score, review, area_px, frac, agreement, margin, comps, "; ".join(reasons) if review else "")


def quality_from_logits(
    logits: torch.Tensor, flipped_logits: torch.Tensor, calibration: QualityCalibration | None, threshold: float = 0.5
) -> Quality:
    """:func:`quality_from_probabilities` of one image's model-size logits ``(1, S, S)`` and the flipped-back logits
    of its flipped input (what ``scunext predict`` and ``scunext serve`` compute: one extra forward pass, no work at
    the image's full size). ``calibration`` None: :meth:`QualityCalibration.default`."""
    return quality_from_probabilities(torch.sigmoid(logits[0].float()).numpy(),
                                      torch.sigmoid(flipped_logits[0].float()).numpy(),
                                      calibration or QualityCalibration.default(), threshold)  # fmt: skip


def flipped_probabilities(predictor: Predictor, images: Sequence[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Probability maps of the horizontally flipped images, flipped back (so they align with the images)."""
    flipped = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    return [np.ascontiguousarray(p[:, ::-1]) for p in predictor.probabilities(flipped, batch_size)]


def assess(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    calibration: QualityCalibration | None = None,
    probs: Sequence[np.ndarray] | None = None,
    batch_size: int = 8,
) -> list[Quality]:
    """The :class:`Quality` of the predictor's mask for each image.

    Pass the probabilities already computed for the masks as ``probs`` so that only the flipped pass is extra
    work (one more forward pass per image). ``calibration`` defaults to the predictor's own
    (``predictor.quality``, loaded from the run), else :meth:`QualityCalibration.default`.
    """
    cal = calibration or getattr(predictor, "quality", None) or QualityCalibration.default()
    images = list(images)
    probs = list(probs) if probs is not None else predictor.probabilities(images, batch_size)
    if len(probs) != len(images):
        raise ValueError(f"{len(probs)} probability maps for {len(images)} images")
    flipped = flipped_probabilities(predictor, images, batch_size)
    return [quality_from_probabilities(p, q, cal, predictor.threshold) for p, q in zip(probs, flipped)]


def area_prior(masks: Sequence[np.ndarray] | np.ndarray, components: Sequence[int] | None = None) -> dict[str, Any]:
    """Area and component prior from training masks (or their area fractions): ``area_lo``/``area_hi`` (1st/99th
    percentile of the area fraction), ``min_area_fraction`` (half of ``area_lo``) and ``max_components`` (99th
    percentile of the component count)."""
    if isinstance(masks, np.ndarray) and masks.ndim == 1:
        fracs = masks.astype(float)
    else:
        fracs = np.array([float(np.asarray(m).mean()) for m in masks])
        components = [count_components(np.asarray(m, bool)) for m in masks]
    if fracs.size == 0:
        raise ValueError("no training masks to build the area prior from")
    lo, hi = (float(v) for v in np.percentile(fracs, [1, 99]))
    lo = max(lo, 1e-4)
    out = {"area_lo": lo, "area_hi": max(hi, lo), "min_area_fraction": lo / 2}
    if components is not None:
        out["max_components"] = max(1, int(np.ceil(np.percentile(np.asarray(components), 99))))
    return out


def auroc(scores: Sequence[float], bad: Sequence[bool]) -> float:
    """Area under the ROC curve of ``-score`` as a detector of ``bad`` (ties count half): the probability that a
    bad prediction scores lower than a good one. NaN when either class is missing."""
    s, b = np.asarray(scores, float), np.asarray(bad, bool)
    if b.all() or not b.any():
        return float("nan")
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(s[~b], s[b], alternative="two-sided").statistic
    return float(u / (b.sum() * (~b).sum()))


THRESHOLD_RULES = ("youden", "failures")


def check_rule(rule: str) -> str:
    """Return ``rule`` or raise ValueError listing :data:`THRESHOLD_RULES`."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    return rule


def choose_threshold(scores: Sequence[float], dices: Sequence[float], forced: Sequence[bool] | None = None,
                     bad_dice: float = 0.90, fail_dice: float = 0.50,
                     rule: str = "youden") -> tuple[float, dict[str, Any]]:  # fmt: skip
    """The review threshold from validation predictions (scores and their true Dice).

    Rules (``rule``):

    * ``youden`` (default): the threshold with the largest Youden index (flagged share of ``Dice < bad_dice``
      minus flagged share of the rest), raised if needed so that every validation case with ``Dice < fail_dice``
      is flagged. Catches most masks below ``bad_dice``; at a new site, whose scores run lower, it also flags many
      good masks (docs/robustness.md#6).
    * ``failures``: the lowest threshold that still flags every validation case with ``Dice < fail_dice`` (the
      Youden threshold when there is none): the fewest false alarms that keep every validation failure flagged.

    ``forced`` marks cases the hard area rule flags whatever the threshold.

    Returns:
        ``(threshold, stats)``; stats hold counts, the AUROC and the flagged shares at the threshold.
    """
    check_rule(rule)
    s, d = np.asarray(scores, float), np.asarray(dices, float)
    if s.size == 0 or s.size != d.size:
        raise ValueError("need as many scores as Dice values, at least one")
    bad, fail = d < bad_dice, d < fail_dice
    forced_b = np.zeros(s.size, bool) if forced is None else np.asarray(forced, bool)
    candidates = np.unique(np.concatenate([s, [0.0, 1.0 + 1e-9]]))
    best_t, best_j = 0.5, -np.inf
    if bad.any() and (~bad).any():
        for t in candidates:
            f = (s < t) | forced_b
            j = f[bad].mean() - f[~bad].mean()
            if j > best_j + 1e-12:
                best_t, best_j = float(t), float(j)
    t = best_t
    if (fail & ~forced_b).any():
        lowest = float(np.nextafter(s[fail & ~forced_b].max(), np.inf))  # flags every unforced failure
        t = lowest if rule == "failures" else max(t, lowest)
    flagged = (s < t) | forced_b
    stats = {
        "n": int(s.size), "n_dice_below_0.90": int(bad.sum()), "n_dice_below_0.50": int(fail.sum()),
        "auroc_dice_below_0.90": auroc(s, bad), "youden_threshold": best_t,
        "recall_dice_below_0.90": float(flagged[bad].mean()) if bad.any() else None,
        "recall_dice_below_0.50": float(flagged[fail].mean()) if fail.any() else None,
        "flagged_share_dice_ge_0.90": float(flagged[~bad].mean()) if (~bad).any() else None,
        "flagged_share": float(flagged.mean()),
        "rule": (f"max Youden index for Dice < {bad_dice}, raised so every Dice < {fail_dice} case is flagged"
                 if rule == "youden" else f"lowest threshold that flags every Dice < {fail_dice} case"),
        "rule_name": rule,
    }  # fmt: skip
    return float(t), stats
