"""Paired statistics against hand-computed cases: Wilcoxon exact p-values, bootstrap intervals, the verdict rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scunext.experiments.report import per_image_dice
from scunext.metrics.paired import bootstrap_ci, paired_comparison, verdict, wilcoxon_p


def _scores(diffs, base=0.5):
    """Two score maps whose per-image differences A - B are ``diffs``."""
    a = {f"img{i}": base + d for i, d in enumerate(diffs)}
    b = {f"img{i}": base for i in range(len(diffs))}
    return a, b


def test_all_positive_differences():
    # n = 5, all positive, no ties: exact two-sided p = 2 * (1 / 2**5) = 0.0625
    a, b = _scores([0.01, 0.02, 0.03, 0.04, 0.05])
    r = paired_comparison([a], [b], "A", "B", n_boot=4000, seed=1)
    assert r.mean_difference == pytest.approx(0.03)
    assert r.p_value == pytest.approx(0.0625)
    assert 0.01 <= r.ci_low < 0.03 < r.ci_high <= 0.05
    assert (r.wins, r.losses, r.ties) == (5, 0, 0)
    # CI excludes 0 but p = 0.0625 >= 0.05: the two tests disagree, so no winner is named
    assert r.verdict == "no difference shown"


def test_wilcoxon_hand_computed_with_one_negative():
    # ranks 1..6, the largest negative: W- = 6; #{subsets of 1..6 with sum <= 6} = 14, p = 2 * 14 / 64
    assert wilcoxon_p(np.array([1, 2, 3, 4, 5, -6.0])) == pytest.approx(28 / 64)
    # symmetric differences: W+ = W- -> p = 1
    assert wilcoxon_p(np.array([-2, -1, 1, 2.0])) == pytest.approx(1.0)
    # nothing to rank
    assert wilcoxon_p(np.zeros(4)) == 1.0


def test_wilcoxon_zero_differences_do_not_change_the_exact_test():
    """Zeros are dropped before ranking, so the p-value is the exact one of the non-zero differences (scipy's own
    zero_method='wilcox' switches to the normal approximation as soon as one zero is present)."""
    d = np.array([1, 2, 3, 4, 5, -6.0])
    assert wilcoxon_p(np.concatenate([d, np.zeros(3)])) == pytest.approx(28 / 64)
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1, 20)
    assert wilcoxon_p(np.concatenate([d, [0.0]])) == wilcoxon_p(d)


def test_undefined_scores_are_left_out_on_both_sides():
    """A NaN score (undefined Dice) on either side drops that image from both; the id sets must still match."""
    a = {"i0": 0.9, "i1": 0.8, "i2": math.nan, "i3": 0.7}
    b = {"i0": 0.8, "i1": 0.6, "i2": 0.0, "i3": math.nan}
    r = paired_comparison([a], [b])
    assert r.n_images == 2 and r.mean_difference == pytest.approx(0.15)
    with pytest.raises(ValueError, match="no images to compare .each of the 1 has an undefined score"):
        paired_comparison([{"i0": math.nan}], [{"i0": 0.5}])
    with pytest.raises(ValueError, match="not scored on the same images"):
        paired_comparison([{"i0": math.nan, "i1": 0.5}], [{"i1": 0.5}])
    # a record row without a Dice value (undefined) keeps its id, so the run still pairs with one that scored it
    rec = {"per_image": {"test": {"i0": {"dice": 0.9}, "i1": {}}}}
    other = {"per_image": {"test": {"i0": {"dice": 0.7}, "i1": {"dice": 0.0}}}}
    r = paired_comparison([per_image_dice(rec)], [per_image_dice(other)])
    assert r.n_images == 1 and r.mean_difference == pytest.approx(0.2)


def test_bootstrap_two_point_case():
    # d = [0, 1]: a resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4 -> 95 % interval [0, 1]
    low, high = bootstrap_ci([np.array([0.0, 1.0])], n_boot=20_000, seed=0)
    assert (low, high) == (0.0, 1.0)
    # constant differences: the interval collapses on the value
    assert bootstrap_ci([np.full(7, 0.25)], n_boot=100) == (0.25, 0.25)


@pytest.mark.parametrize("n_boot", [1, 999, 1000, 1001, 2500])
def test_bootstrap_in_chunks_draws_what_one_call_draws(n_boot):
    """The replicates are drawn in chunks (bounded memory); the interval is the one a single n_boot x n draw gives,
    so tables built before the chunking keep their CIs."""
    rng = np.random.default_rng(5)
    groups = [rng.normal(size=600), rng.normal(size=37), rng.normal(size=1)]
    gen, stats = np.random.default_rng(0), np.zeros(n_boot)
    for g in groups:
        stats += g[gen.integers(0, len(g), size=(n_boot, len(g)))].mean(axis=1)
    alpha = (1 - 0.95) / 2
    expected = tuple(float(q) for q in np.quantile(stats / len(groups), [alpha, 1 - alpha]))
    assert bootstrap_ci(groups, n_boot=n_boot, seed=0) == expected


def test_bootstrap_refuses_resample_counts_out_of_range():
    for n_boot in (0, 100_001):
        with pytest.raises(ValueError, match="between 1 and 100,000"):
            bootstrap_ci([np.ones(3)], n_boot=n_boot)


def test_seeds_weigh_the_same_and_per_seed_differences():
    # seed 1: two images +0.01; seed 2: four images +0.03 -> mean of seed means 0.02 (not the pooled 0.0233)
    a1, b1 = _scores([0.01, 0.01])
    a2, b2 = _scores([0.03] * 4)
    r = paired_comparison([a1, a2], [b1, b2], "A", "B", n_boot=500)
    assert r.mean_difference == pytest.approx(0.02)
    assert r.per_group == pytest.approx([0.01, 0.03])
    assert (r.ci_low, r.ci_high) == pytest.approx((0.02, 0.02))
    assert r.n_images == 6 and r.n_groups == 2


def test_clear_winner_both_directions_and_seeded():
    rng = np.random.default_rng(3)
    d = 0.05 + 0.01 * rng.standard_normal(40)
    a, b = _scores(d)
    r1 = paired_comparison([a], [b], "sc_unext", "unext_s", n_boot=2000, seed=7)
    r2 = paired_comparison([a], [b], "sc_unext", "unext_s", n_boot=2000, seed=7)
    assert r1 == r2  # seeded: same inputs, same interval
    assert r1.ci_low > 0 and r1.p_value < 1e-6 and r1.verdict == "sc_unext beats unext_s"
    r3 = paired_comparison([b], [a], "unext_s", "sc_unext", n_boot=2000, seed=7)
    assert r3.verdict == "sc_unext beats unext_s" and r3.ci_high < 0


def test_verdict_rule_table():
    assert verdict("A", "B", 0.01, 0.02, 0.01) == "A beats B"
    assert verdict("A", "B", -0.02, -0.01, 0.01) == "B beats A"
    assert verdict("A", "B", -0.01, 0.02, 0.001) == "no difference shown"  # CI covers 0
    assert verdict("A", "B", 0.01, 0.02, 0.2) == "no difference shown"  # p too large


def test_not_the_same_images_is_refused():
    a, b = _scores([0.1, 0.2])
    b = {"other": 0.5, "img0": 0.5}
    with pytest.raises(ValueError, match="A vs B, group 1: .*not scored on the same images"):
        paired_comparison([a], [b])
    # the message names the table's column (the second seed that both have is not "seed 2" when seed 1 is missing)
    with pytest.raises(ValueError, match="malunet vs sc_unext, seed 2:"):
        paired_comparison([a, a], [a, b], "malunet", "sc_unext", group_names=["seed 0", "seed 2"])
    with pytest.raises(ValueError, match="same number"):
        paired_comparison([a], [])


def test_component_effects_pairs_only_configurations_differing_by_one_term():
    """+skip adds 0.1 on every image wherever it is switched on, fuse adds nothing, edge loss takes 0.02 off: each
    component's effect over the pairs that differ only by it is exactly that."""
    from scunext.experiments.table2 import TABLE2_CONFIGS, component_effects, components_of

    assert components_of("UNeXt") == frozenset()
    assert components_of("SC-UNeXt (edge loss+skip)") == {"edge loss", "skip"}
    images = [f"i{k}" for k in range(6)]
    effect = {"skip": 0.1, "fuse": 0.0, "edge loss": -0.02}
    scores = {}
    for name in TABLE2_CONFIGS:
        shift = sum(effect[c] for c in components_of(name))
        scores[name] = {f"fold {f}": {i: 0.5 + 0.01 * k + f * 0.001 + shift for k, i in enumerate(images)}
                        for f in (1, 2)}  # fmt: skip
    got = {comp: r for comp, r in component_effects(scores, n_boot=200)}
    assert set(got) == {"edge loss", "skip", "fuse"}
    assert got["skip"].mean_difference == pytest.approx(0.1) and got["skip"].n_groups == 8  # 4 pairs x 2 folds
    assert (got["skip"].ci_low, got["skip"].ci_high) == pytest.approx((0.1, 0.1))
    assert got["skip"].verdict == "+skip beats no skip"
    assert got["fuse"].mean_difference == pytest.approx(0.0, abs=1e-12) and got["fuse"].verdict == "no difference shown"
    assert got["edge loss"].verdict == "no edge loss beats +edge loss"
