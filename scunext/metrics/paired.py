"""Paired comparison of two models scored on the same test images: is A better than B, or is it noise?

The unit is the per-image difference ``d = score_A(image) - score_B(image)`` on images both models were scored on
(same split, same images). Several seeds (or splits) give several groups of differences; each group is one seed.

* **Mean difference**: the mean over groups of each group's mean per-image difference (each seed weighs the same).
* **Bootstrap 95 % CI** of that mean: images are resampled with replacement *within* each group (a stratified
  percentile bootstrap, ``n_boot`` replicates, a fixed ``seed``, so the same inputs give the same interval).
* **Wilcoxon signed-rank p-value** (``scipy.stats.wilcoxon``, two-sided, zero differences dropped first, then
  scipy's ``method="auto"``: the exact distribution for up to 50 non-zero differences without ties, otherwise
  scipy's choice, the normal approximation for the hundreds of images of this project's tables) over all pooled
  per-image differences.
* **Per-seed differences**: each group's mean difference, to see whether the sign holds on every seed.

**The rule for the words.** "A beats B" is said only when the whole 95 % CI lies above 0 ("B beats A" when it lies
below 0) *and* the Wilcoxon p-value is below 0.05, so that the two tests agree (a percentile bootstrap is too narrow
on a handful of images); otherwise the verdict is "no difference shown". The per-seed differences are reported
beside it. With one seed the CI covers image sampling only, not training noise: the per-seed differences of a
second seed say how much that moves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ALPHA", "PairedResult", "paired_comparison", "pair_scores", "bootstrap_ci", "wilcoxon_p", "verdict",
           "MAX_N_BOOT"]


@dataclass
class PairedResult:
    """Outcome of :func:`paired_comparison` (differences are A - B, in the unit of the scores)."""

    a: str
    b: str
    n_images: int
    n_groups: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    per_group: list[float]
    wins: int
    losses: int
    ties: int
    verdict: str
    n_boot: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def pair_scores(a: Mapping[str, float], b: Mapping[str, float], what: str = "scores") -> np.ndarray:
    """Per-image differences ``a[id] - b[id]`` over the ids both hold, in sorted id order.

    An image whose score is NaN on either side (undefined, e.g. Dice of two empty masks under a NaN rule) is left
    out of both sides; it must still be listed in both, so that a different split is not mistaken for one.

    Raises:
        ValueError: the two sets of ids differ (not the same test images), or no image has a score on both sides.
    """
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        example = (only_a or only_b)[0]
        raise ValueError(f"{what}: the two runs were not scored on the same images ({len(only_a)} only in A, "
                         f"{len(only_b)} only in B, e.g. {example!r}); a paired comparison needs the same "
                         "split")  # fmt: skip
    d = np.array([float(a[i]) - float(b[i]) for i in sorted(a)], dtype=np.float64)
    d = d[~np.isnan(d)]
    if not d.size:
        undefined = f" (each of the {len(a)} has an undefined score on one side)" if a else ""
        raise ValueError(f"{what}: no images to compare{undefined}")
    return d


#: the most bootstrap resamples accepted (10,000 is the default; the CI's own Monte Carlo error is then already far
#: below the digits printed)
MAX_N_BOOT = 100_000
_BOOT_CHUNK = 1_000


def bootstrap_ci(
    groups: Sequence[np.ndarray], n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over groups of each group's mean, resampling within each group."""
    if not 1 <= n_boot <= MAX_N_BOOT:
        raise ValueError(f"n_boot must be between 1 and {MAX_N_BOOT:,}, got {n_boot}")
    rng = np.random.default_rng(seed)
    stats = np.zeros(n_boot, dtype=np.float64)
    for g in groups:
        # in chunks of replicates (memory: chunk x len(g) indices, not n_boot x len(g)); the draws, and so the
        # interval, are the same as in one call: the generator fills the rows in the same order
        for start in range(0, n_boot, _BOOT_CHUNK):
            rows = min(_BOOT_CHUNK, n_boot - start)
            idx = rng.integers(0, len(g), size=(rows, len(g)))
            stats[start : start + rows] += g[idx].mean(axis=1)
    stats /= len(groups)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is 0 (nothing to rank)."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    d = d[d != 0]  # dropped here, not by zero_method: scipy leaves the exact test as soon as any zero is
    if not d.size:  # present, even for a handful of pairs (scipy >= 1.13)
        return 1.0
    return float(wilcoxon(d, alternative="two-sided").pvalue)


ALPHA = 0.05


def verdict(a: str, b: str, ci_low: float, ci_high: float, p_value: float) -> str:
    """The documented rule: a winner only when the 95 % CI excludes 0 and the Wilcoxon p-value is below 0.05."""
    if p_value < ALPHA and ci_low > 0:
        return f"{a} beats {b}"
    if p_value < ALPHA and ci_high < 0:
        return f"{b} beats {a}"
    return "no difference shown"


def paired_comparison(
    a_groups: Sequence[Mapping[str, float]],
    b_groups: Sequence[Mapping[str, float]],
    a: str = "A",
    b: str = "B",
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    group_names: Sequence[str] | None = None,
) -> PairedResult:
    """Compare A and B on the same images, one mapping ``image id -> score`` per seed (group) for each model.

    ``a_groups[k]`` and ``b_groups[k]`` must hold the same image ids (the same split of seed k). See the module
    docstring for the statistics and the verdict rule. ``group_names`` name the groups in error messages (e.g. the
    table's columns ``seed 2``, ``fold 3``; default ``group 1``, ``group 2``, ...).
    """
    if len(a_groups) != len(b_groups) or not a_groups:
        raise ValueError(f"need the same number (>= 1) of seeds for both models, got {len(a_groups)} and "
                         f"{len(b_groups)}")  # fmt: skip
    names = list(group_names) if group_names is not None else [f"group {k + 1}" for k in range(len(a_groups))]
    groups = [pair_scores(ga, gb, f"{a} vs {b}, {name}") for name, ga, gb in zip(names, a_groups, b_groups)]
    per_group = [float(g.mean()) for g in groups]
    mean = float(np.mean(per_group))
    low, high = bootstrap_ci(groups, n_boot=n_boot, seed=seed)
    pooled = np.concatenate(groups)
    p = wilcoxon_p(pooled)
    p = 1.0 if math.isnan(p) else p
    return PairedResult(
        a=a, b=b, n_images=int(pooled.size), n_groups=len(groups), mean_difference=mean, ci_low=low, ci_high=high,
        p_value=p, per_group=per_group, wins=int((pooled > 0).sum()),
        losses=int((pooled < 0).sum()), ties=int((pooled == 0).sum()), verdict=verdict(a, b, low, high, p),
        n_boot=n_boot, seed=seed,
    )  # fmt: skip
