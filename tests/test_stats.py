"""Intervals and tests against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molab.evals.stats import (
    bootstrap_ci,
    cohens_kappa,
    paired_permutation_test,
    permutation_test,
    proportion,
    share,
    wilson,
)


def test_wilson_matches_hand_computed_values():
    # 8 of 10, z = 1.96: centre = (0.8 + 0.19208) / 1.38416, half-width from the formula
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson(5, 3)


def test_proportion_and_share_are_the_rate_record_of_every_summary():
    assert proportion(8, 10) == {"k": 8, "n": 10, "rate": 0.8, "ci": list(wilson(8, 10))}
    assert proportion(0, 0) == {"k": 0, "n": 0, "rate": None, "ci": [0.0, 1.0]}
    assert share([True, False, True, True]) == proportion(3, 4)
    assert share(x > 1 for x in [0, 2]) == proportion(1, 2)  # any iterable, counted once
    assert share([]) == proportion(0, 0)
    with pytest.raises(ValueError):
        proportion(3, 2)


def test_bootstrap_interval_covers_mean_and_shrinks_with_data():
    rng = np.random.default_rng(1)
    small = rng.random(20) < 0.3
    large = rng.random(2000) < 0.3
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= 0.3 <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3


def test_grouped_bootstrap_is_wider_for_clustered_values():
    # 10 prompts, 20 samples each, every sample of a prompt identical: really 10 observations
    values = np.repeat([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], 20).astype(float)
    groups = np.repeat(np.arange(10), 20)
    lo_g, hi_g = bootstrap_ci(values, groups=groups)
    lo_i, hi_i = bootstrap_ci(values)
    assert (hi_g - lo_g) > 2 * (hi_i - lo_i)


def test_paired_permutation_detects_planted_difference_and_not_identity():
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.2).astype(float)
    better = np.where(rng.random(200) < 0.3, 1.0, base)
    assert paired_permutation_test(better, base) < 0.01
    assert paired_permutation_test(base, base) == 1.0


def test_unpaired_permutation_test():
    a = np.ones(30)
    b = np.zeros(30)
    assert permutation_test(a, b, n_perm=2000) < 0.01
    same = np.random.default_rng(3).random(40)
    assert permutation_test(same[:20], same[20:], n_perm=2000) > 0.05


def test_cohens_kappa_hand_computed():
    a = [True, True, False, False, True, False, True, False]
    b = [True, False, False, False, True, False, True, True]
    # observed 6/8; chance 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 0.5
    assert cohens_kappa(a, b) == pytest.approx(0.5)
    assert cohens_kappa(a, a) == pytest.approx(1.0)
    assert math.isnan(cohens_kappa([True, True], [True, True]))
