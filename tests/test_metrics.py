"""Metrics: hand-computed cases, both reductions and empty policies, batch-size invariance, HD95, and agreement with
MONAI and medpy on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from scunext.metrics import (
    METRIC_NAMES,
    ConfusionCounts,
    SegmentationMeter,
    confusion_counts,
    dice_score,
    hd95,
    iou_score,
    overlap_scores,
    percentile_hausdorff,
    precision_score,
    recall_score,
    specificity_score,
    surface_distances,
)

NAN = math.nan
SCORE_FNS = {
    "dice": dice_score,
    "iou": iou_score,
    "precision": precision_score,
    "recall": recall_score,
    "specificity": specificity_score,
}


# --------------------------------------------------------------------------------------------------- hand cases
def _mask(pixels: list[tuple[int, int]], size: int = 4) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    for r, c in pixels:
        m[r, c] = True
    return m


BLOCK_TL = [(0, 0), (0, 1), (1, 0), (1, 1)]
BLOCK_BR = [(2, 2), (2, 3), (3, 2), (3, 3)]
ALL = [(r, c) for r in range(4) for c in range(4)]

# name: (pred pixels, target pixels, (tp, fp, fn, tn), scores with empty="one", scores with empty="nan")
# scores are (dice, iou, precision, recall, specificity)
CASES = {
    "perfect": (BLOCK_TL, BLOCK_TL, (4, 0, 0, 12), (1, 1, 1, 1, 1), (1, 1, 1, 1, 1)),
    "disjoint": (BLOCK_BR, BLOCK_TL, (0, 4, 4, 8), (0, 0, 0, 0, 2 / 3), (0, 0, 0, 0, 2 / 3)),
    "partial": (
        [(0, 1), (0, 2), (0, 3)],
        [(0, 0), (0, 1), (0, 2)],
        (2, 1, 1, 12),
        (2 / 3, 1 / 2, 2 / 3, 2 / 3, 12 / 13),
        (2 / 3, 1 / 2, 2 / 3, 2 / 3, 12 / 13),
    ),
    "both_empty": ([], [], (0, 0, 0, 16), (1, 1, 1, 1, 1), (NAN, NAN, NAN, NAN, 1)),
    "pred_empty": ([], BLOCK_TL, (0, 0, 4, 12), (0, 0, 0, 0, 1), (0, 0, NAN, 0, 1)),
    "target_empty": (BLOCK_TL, [], (0, 4, 0, 12), (0, 0, 0, 0, 3 / 4), (0, 0, 0, NAN, 3 / 4)),
    "target_full": (ALL[4:], ALL, (12, 0, 4, 0), (6 / 7, 3 / 4, 1, 3 / 4, 0), (6 / 7, 3 / 4, 1, 3 / 4, NAN)),
    "both_full": (ALL, ALL, (16, 0, 0, 0), (1, 1, 1, 1, 1), (1, 1, 1, 1, NAN)),
}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _counts(case: str) -> ConfusionCounts:
    pred, target, *_ = CASES[case]
    return confusion_counts(_mask(pred)[None], _mask(target)[None])


@pytest.mark.parametrize("case", list(CASES))
def test_hand_counts(case):
    counts = _counts(case)
    assert tuple(int(x) for x in counts) == CASES[case][2]
    for field in counts:
        assert field.shape == (1, 1) and field.dtype == torch.int64


@pytest.mark.parametrize("empty", ["one", "nan"])
@pytest.mark.parametrize("case", list(CASES))
def test_hand_scores(case, empty):
    expected = CASES[case][3] if empty == "one" else CASES[case][4]
    counts = _counts(case)
    for name, want in zip(METRIC_NAMES, expected, strict=True):
        for reduction in ("per_image", "pooled"):  # one image: both reductions agree
            got = SCORE_FNS[name](counts, reduction=reduction, empty=empty)
            assert got.shape == (1,) and got.dtype == torch.float64
            assert _same(float(got), want), (case, name, reduction, float(got), want)


def test_reductions_differ_as_computed_by_hand():
    cases = ["partial", "both_empty", "pred_empty"]
    pred = torch.stack([_mask(CASES[c][0]) for c in cases])
    target = torch.stack([_mask(CASES[c][1]) for c in cases])
    counts = confusion_counts(pred, target)
    # pooled counts: tp=2, fp=1, fn=5, tn=40
    expected = {
        ("per_image", "one"): dict(dice=5 / 9, iou=1 / 2, precision=5 / 9, recall=5 / 9, specificity=(12 / 13 + 2) / 3),
        ("per_image", "nan"): dict(dice=1 / 3, iou=1 / 4, precision=2 / 3, recall=1 / 3, specificity=(12 / 13 + 2) / 3),
        ("pooled", "one"): dict(dice=2 / 5, iou=1 / 4, precision=2 / 3, recall=2 / 7, specificity=40 / 41),
        ("pooled", "nan"): dict(dice=2 / 5, iou=1 / 4, precision=2 / 3, recall=2 / 7, specificity=40 / 41),
    }
    for (reduction, empty), want in expected.items():
        got = overlap_scores(counts, reduction=reduction, empty=empty)
        for name in METRIC_NAMES:
            assert _same(float(got[name]), want[name]), (reduction, empty, name)
    per = dice_score(counts, reduction="none", empty="nan")
    assert per.shape == (3, 1)
    assert math.isnan(per[1, 0]) and per[2, 0] == 0


def test_all_empty_set():
    counts = _counts("both_empty")
    assert float(dice_score(counts, "pooled", "one")) == 1.0
    assert math.isnan(float(dice_score(counts, "pooled", "nan")))
    assert math.isnan(float(dice_score(counts, "per_image", "nan")))


def test_inputs_numpy_bool_float_and_shapes():
    pred, target = _mask(CASES["partial"][0]), _mask(CASES["partial"][1])
    ref = confusion_counts(pred[None], target[None])
    variants = [
        (pred[None].numpy(), target[None].numpy()),
        (pred[None].float(), target[None].long()),
        (pred[None, None], target[None]),  # (B, 1, H, W) vs (B, H, W)
        (pred[None, None].numpy().astype(np.uint8), target[None, None].numpy().astype(np.float32)),
    ]
    for p, t in variants:
        got = confusion_counts(p, t)
        assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


def test_multiclass_one_hot_counts():
    labels_p = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    labels_t = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    one_hot = lambda x: torch.nn.functional.one_hot(x, 3).permute(0, 3, 1, 2)  # noqa: E731
    counts = confusion_counts(one_hot(labels_p), one_hot(labels_t))
    assert counts.tp.shape == (2, 3)
    assert torch.all(counts.tp + counts.fp + counts.fn + counts.tn == 64)
    for b in range(2):
        for c in range(3):
            p, t = labels_p[b] == c, labels_t[b] == c
            assert counts.tp[b, c] == (p & t).sum() and counts.fp[b, c] == (p & ~t).sum()
            assert counts.fn[b, c] == (~p & t).sum()


def test_bad_inputs_raise():
    good = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="binary"):
        confusion_counts(torch.full((1, 4, 4), 0.7), good)
    with pytest.raises(ValueError, match="differ"):
        confusion_counts(torch.zeros(1, 4, 5), good)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        confusion_counts(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(TypeError):
        confusion_counts([[0, 1]], good)
    counts = confusion_counts(good, good)
    with pytest.raises(ValueError, match="reduction"):
        dice_score(counts, reduction="micro")
    with pytest.raises(ValueError, match="empty"):
        dice_score(counts, empty="zero")


# ----------------------------------------------------------------------------------------- random data helpers
def _blobs(rng: np.random.Generator, n: int, size: int, sigma: float = 3.0) -> np.ndarray:
    """Smooth random blobs of varying area (about 5%..50% of the image), shape (n, size, size), bool."""
    out = np.empty((n, size, size), dtype=bool)
    for i in range(n):
        field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
        out[i] = field > np.quantile(field, rng.uniform(0.5, 0.95))
    return out


def _pred_from(rng: np.random.Generator, target: np.ndarray) -> np.ndarray:
    """A plausible prediction: the target, shifted a little, with some blobs added and removed."""
    noise = _blobs(rng, len(target), target.shape[-1], sigma=2.0)
    shifted = np.roll(target, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(1, 2))
    return shifted ^ (noise & (rng.random(target.shape) < 0.3))


def _dataset(seed: int = 0, n: int = 10, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n, 1, H, W) and targets (n, 1, H, W), including a both-empty and a target-empty image."""
    rng = np.random.default_rng(seed)
    target = _blobs(rng, n, size)
    pred = _pred_from(rng, target)
    target[0] = False
    pred[0] = False  # both empty
    target[1] = False  # only the prediction has something
    logits = np.where(pred, 1.0, -1.0) * rng.uniform(0.5, 4.0, pred.shape)
    return torch.from_numpy(logits[:, None]).float(), torch.from_numpy(target[:, None])


def _deep_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


# ---------------------------------------------------------------------------------------- batch-size invariance
@pytest.mark.parametrize("empty", ["one", "nan"])
def test_meter_is_batch_size_invariant(empty):
    logits, target = _dataset()
    n = len(logits)
    ids = [f"img{i}" for i in range(n)]
    results = []
    for bs in (1, 3, n):
        meter = SegmentationMeter(compute_hd95=True, empty=empty)
        for s in range(0, n, bs):
            meter.update(logits[s : s + bs], target[s : s + bs], ids=ids[s : s + bs])
        results.append((meter.compute(), meter.per_image()))
    for other in results[1:]:
        assert _deep_equal(results[0][0], other[0])
        assert _deep_equal(results[0][1], other[1])
    summary, records = results[0]
    assert summary["n_images"] == n and [r["id"] for r in records] == ids
    # per-image mean really is the mean of the per-image records
    assert summary["dice"]["per_image_mean"] == pytest.approx(np.nanmean([r["dice"] for r in records]), abs=1e-12)
    assert summary["hd95"]["n_undefined"] == 1  # image 1: only the prediction is non-empty
    assert records[0]["hd95"] == 0.0 and math.isnan(records[1]["hd95"])
    assert summary["dice"]["n_undefined"] == (1 if empty == "nan" else 0)


def test_unext_style_batch_pooling_depends_on_batch_size():
    """The official UNeXt metric (IoU pooled per batch, averaged weighted by batch size) is not batch invariant."""
    logits, target = _dataset(seed=1)
    pred = logits > 0

    def unext_iou(bs: int) -> float:
        total, n = 0.0, 0
        for s in range(0, len(pred), bs):
            p, t = pred[s : s + bs], target[s : s + bs]
            total += float(((p & t).sum() + 1e-5) / ((p | t).sum() + 1e-5)) * len(p)
            n += len(p)
        return total / n

    assert abs(unext_iou(1) - unext_iou(3)) > 1e-3


# -------------------------------------------------------------------------------------------------------- meter
def test_meter_output_types_and_threshold():
    target = torch.tensor([[[1, 1], [0, 0]]])
    probs = torch.tensor([[[0.51, 0.5], [0.2, 0.0]]])  # 0.5 is not above the threshold
    m = SegmentationMeter(output_type="probs")
    counts = m.update(probs, target)
    assert tuple(int(x) for x in counts) == (1, 0, 1, 2)
    m_logits = SegmentationMeter()
    m_logits.update(torch.logit(probs.clamp(1e-6, 1 - 1e-6)), target)
    assert m_logits.per_image() == m.per_image()
    m_mask = SegmentationMeter(output_type="mask")
    m_mask.update((probs > 0.5).numpy(), target.numpy())
    assert m_mask.per_image() == m.per_image()
    rec = m.per_image()[0]
    assert rec["id"] == 0 and rec["dice"] == pytest.approx(2 / 3) and rec["tp"] == 1
    assert rec["target_empty"] is False and rec["pred_empty"] is False


def test_meter_multiclass_argmax_and_label_maps():
    labels = torch.randint(0, 3, (4, 16, 16), generator=torch.Generator().manual_seed(0))
    logits = 5.0 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    m = SegmentationMeter(num_classes=3, compute_hd95=True)
    m.update(logits, labels)
    out = m.compute()
    assert out["num_classes"] == 3
    for name in METRIC_NAMES:
        assert out[name]["per_image_mean"] == 1.0 and out[name]["pooled"] == 1.0
        assert out[name]["per_class"]["pooled"] == [1.0, 1.0, 1.0]
    assert out["hd95"]["per_image_mean"] == 0.0
    assert len(m.per_image()[0]["dice"]) == 3
    # one-hot targets (B, C, H, W) give the same result as label maps
    m2 = SegmentationMeter(num_classes=3, compute_hd95=True)
    m2.update(logits, torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2))
    assert _deep_equal(m2.compute(), out)


def test_meter_multiclass_hd95_counts_a_missed_class_as_undefined():
    """A class missed on one image (target non-empty, prediction empty) makes that image's HD95 undefined: it must
    not score on its remaining classes (which would rank it better than an image that found everything)."""
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    target[:, 9:13, 9:13] = 2
    pred = target.clone()
    pred[0, 2:6, 3:7] = 1  # image 0: both classes found, class 1 shifted by one pixel
    pred[0, 2:6, 2] = 0
    pred[1, 9:13, 9:13] = 0  # image 1: class 2 missed entirely
    m = SegmentationMeter(num_classes=3, output_type="mask", compute_hd95=True)
    m.update(pred, target)
    hd = m.compute()["hd95"]
    per_class = [r["hd95"] for r in m.per_image()]
    assert math.isnan(per_class[1][2]) and not any(math.isnan(v) for v in per_class[0])
    assert hd["n_undefined"] == 1
    assert hd["per_image_mean"] == pytest.approx(np.mean(per_class[0]))  # image 0 alone


def test_meter_thresholds_bfloat16_logits_like_float32():
    """sigmoid in bfloat16 rounds to exactly 0.5 for small positive logits; the rule is logit > 0 at any dtype."""
    target = torch.ones(1, 1, 4, 4)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        m = SegmentationMeter()
        m.update(torch.full((1, 1, 4, 4), 0.004).to(dtype), target)
        assert m.compute()["dice"]["per_image_mean"] == 1.0, dtype


def test_meter_state_and_errors():
    m = SegmentationMeter()
    with pytest.raises(RuntimeError, match="empty"):
        m.compute()
    m.update(torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    assert len(m) == 2 and "hd95" not in m.compute()
    m.reset()
    assert len(m) == 0
    with pytest.raises(ValueError, match="ids"):
        m.update(torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), ids=["a"])
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.randn(2, 2, 8, 8), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="label map"):
        SegmentationMeter(num_classes=3).update(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 3))
    with pytest.raises(ValueError, match="output_type"):
        SegmentationMeter(output_type="sigmoid")
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMeter(num_classes=0)


# --------------------------------------------------------------------------------------------------------- HD95
def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


@pytest.mark.parametrize("d", [1, 3, 5])
def test_hd95_shifted_squares(d):
    a = _square(48, 10, 10, 20)
    assert percentile_hausdorff(a, _square(48, 10, 10 + d, 20)) == pytest.approx(d)
    assert percentile_hausdorff(_square(48, 10 + d, 10, 20), a) == pytest.approx(d)
    # anisotropic pixels: a horizontal shift of d columns of width 2 is 2d
    assert percentile_hausdorff(a, _square(48, 10, 10 + d, 20), spacing=(1.0, 2.0)) == pytest.approx(2 * d)


def test_hd95_ignores_a_small_outlier_but_hd100_does_not():
    target = _square(64, 5, 5, 20)
    pred = target.copy()
    pred[60, 60] = True  # one far-away false-positive pixel
    assert percentile_hausdorff(pred, target) == 0.0
    assert percentile_hausdorff(pred, target, percentile=100) == pytest.approx(math.hypot(60 - 24, 60 - 24))


def test_hd95_empty_cases_and_batch():
    empty, square = np.zeros((10, 12), bool), _square(12, 2, 2, 4)[:10]
    assert percentile_hausdorff(empty, empty) == 0.0
    assert math.isnan(percentile_hausdorff(square, empty))
    assert math.isnan(percentile_hausdorff(empty, square))
    assert percentile_hausdorff(empty, square, one_empty="max") == pytest.approx(math.hypot(9, 11))
    assert percentile_hausdorff(square, square) == 0.0
    pred = torch.from_numpy(np.stack([empty, square, square]))
    target = torch.from_numpy(np.stack([empty, empty, square]))
    out = hd95(pred, target)
    assert out.shape == (3, 1) and out.dtype == torch.float64
    assert out[0, 0] == 0 and math.isnan(out[1, 0]) and out[2, 0] == 0
    with pytest.raises(ValueError, match="empty"):
        surface_distances(square, empty)


# ------------------------------------------------------------------------------------- independent implementations
def _random_pairs(seed: int, n: int = 8, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = _blobs(rng, n, size)
    pred = _pred_from(rng, target)
    pred[:, 0, 0] |= ~pred.any(axis=(1, 2))  # keep every mask non-empty
    return pred, target


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside MONAI 1.5+ itself
def test_agrees_with_monai():
    pytest.importorskip("monai")
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU

    pred, target = _random_pairs(seed=3)
    p = torch.from_numpy(pred[:, None]).float()
    t = torch.from_numpy(target[:, None]).float()
    counts = confusion_counts(pred, target)
    ours_hd = hd95(pred, target)

    dice = DiceMetric(include_background=True, reduction="none")
    dice(y_pred=p, y=t)
    iou = MeanIoU(include_background=True, reduction="none")
    iou(y_pred=p, y=t)
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    hd(y_pred=p, y=t)

    torch.testing.assert_close(dice_score(counts, "none"), dice.aggregate().double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(iou_score(counts, "none"), iou.aggregate().double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_hd, hd.aggregate().double(), rtol=0, atol=1e-4)
    # MONAI's "mean" reduction is the per-image mean (the paper's convention)
    mean_dice = DiceMetric(include_background=True, reduction="mean")
    mean_dice(y_pred=p, y=t)
    assert float(dice_score(counts, "per_image")) == pytest.approx(float(mean_dice.aggregate()), abs=1e-6)


def test_agrees_with_medpy():
    pytest.importorskip("medpy")
    from medpy.metric import binary

    pred, target = _random_pairs(seed=4)
    counts = confusion_counts(pred, target)
    dice = dice_score(counts, "none")[:, 0]
    iou = iou_score(counts, "none")[:, 0]
    prec = precision_score(counts, "none")[:, 0]
    rec = recall_score(counts, "none")[:, 0]
    spec = specificity_score(counts, "none")[:, 0]
    for i in range(len(pred)):
        assert float(dice[i]) == pytest.approx(binary.dc(pred[i], target[i]), abs=1e-12)
        assert float(iou[i]) == pytest.approx(binary.jc(pred[i], target[i]), abs=1e-12)
        assert float(prec[i]) == pytest.approx(binary.precision(pred[i], target[i]), abs=1e-12)
        assert float(rec[i]) == pytest.approx(binary.recall(pred[i], target[i]), abs=1e-12)
        assert float(spec[i]) == pytest.approx(binary.specificity(pred[i], target[i]), abs=1e-12)
        # medpy pools both directions before the percentile; with percentile=100 both definitions are the HD
        assert percentile_hausdorff(pred[i], target[i], percentile=100) == pytest.approx(
            binary.hd(pred[i], target[i]), abs=1e-9
        )


def test_the_meter_does_not_grow_memory_with_the_number_of_full_size_images():
    """The meter kept a few tiny tensors per image; between each image's large temporary masks they kept glibc's
    heap from shrinking, so ``scunext evaluate`` grew ~36 MB per 1536x1536 image (1.1 GB for 32 test images, 1.7 GB
    for 64). Measured in a fresh process: the resident size after 24 images is within 100 MB of that after 8."""
    import subprocess
    import sys

    code = """
import numpy as np, torch
from scunext.metrics import SegmentationMeter
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
meter, rng, at = SegmentationMeter(output_type="mask", compute_hd95=False), np.random.default_rng(0), {}
for i in range(24):
    pred, mask = rng.random((1536, 1536)) > 0.5, rng.random((1536, 1536)) > 0.5
    meter.update(torch.from_numpy(pred)[None], torch.from_numpy(mask)[None], ids=[i])
    at[i + 1] = rss()
assert meter.compute()["n_images"] == 24
print(at[8], at[24])
"""
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    after_8, after_24 = map(int, out.stdout.split())
    assert after_24 - after_8 < 100, (after_8, after_24)
