"""The statistics behind every rate molab reports.

- `wilson`: the Wilson score interval for one rate (k of n). Unlike the normal
  approximation it stays inside [0, 1] and behaves at 0/n and n/n, which matter here: many
  biases are shown 0 times by a base model. `proportion` (k of n) and `share` (the true ones
  among flags) give the record every summary stores for such a rate: k, n, rate and interval.
- `bootstrap_ci`: a percentile bootstrap for a pooled statistic. With `groups` it resamples
  whole groups (e.g. prompts, or biases), because samples of the same prompt are not
  independent and pooled rates over biases must not pretend they are.
- `paired_permutation_test`: the p-value for a difference in means between two models
  scored on the same items (sign-flipping the per-item differences), and
  `permutation_test` for two unpaired samples.
- `cohens_kappa`: agreement between two judges on the same samples beyond chance.

numpy only: scipy's versions exist but need arrays in other shapes and add nothing here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for `successes` of `n` (95% for z=1.96); (0, 1) when n=0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(k: int, n: int) -> dict:
    """`k` of `n` as {"k", "n", "rate", "ci"}: the rate (None when n is 0) and its Wilson
    interval as a list."""
    return {"k": k, "n": n, "rate": k / n if n else None, "ci": list(wilson(k, n))}


def share(flags: Iterable[bool]) -> dict:
    """The `proportion` of true values among `flags`."""
    flags = list(flags)
    return proportion(sum(bool(f) for f in flags), len(flags))


def bootstrap_ci(
    values: Sequence[float],
    *,
    groups: Sequence | None = None,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat(values)`. With `groups` (one label per value)
    whole groups are resampled with replacement, keeping the values of a group together."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, x.size, size=(n_boot, x.size))
        stats = np.array([stat(x[row]) for row in draws])
    else:
        if len(groups) != x.size:
            raise ValueError(f"{len(groups)} group labels for {x.size} values")
        _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
        stats = np.empty(n_boot)
        for b in range(n_boot):
            picked = rng.integers(0, len(members), size=len(members))
            stats[b] = stat(x[np.concatenate([members[g] for g in picked])])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_permutation_test(
    a: Sequence[float], b: Sequence[float], *, n_perm: int = 10000, seed: int = 0
) -> float:
    """Two-sided p-value that mean(a - b) is 0, for values paired item by item (the same
    prompts scored under two models): the signs of the differences are flipped at random."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return 1.0
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, d.size))
    extreme = np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12)
    return float((extreme + 1) / (n_perm + 1))


def permutation_test(a: Sequence[float], b: Sequence[float], *, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value that two unpaired samples have the same mean (labels shuffled)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return 1.0
    pooled = np.concatenate([x, y])
    observed = abs(x.mean() - y.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(n_perm):
        perm = rng.permutation(pooled)
        extreme += abs(perm[: x.size].mean() - perm[x.size :].mean()) >= observed - 1e-12
    return float((extreme + 1) / (n_perm + 1))


def cohens_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters on the same items; nan when undefined (no items,
    or both raters constant and equal, where chance agreement is already 1)."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.size != y.size:
        raise ValueError(f"{x.size} ratings against {y.size}")
    if x.size == 0:
        return math.nan
    observed = np.mean(x == y)
    chance = x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean())
    if chance == 1:
        return math.nan
    return float((observed - chance) / (1 - chance))
