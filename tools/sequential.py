"""How many seeds a decision needs: a group-sequential paired test for `make compare SEQUENTIAL=1`.

Seed pairs are added in rounds (looks): `first` pairs, then `step` more, up to `max_seeds`. At
look k, with n_k pairs, the paired t-test of mean(B − A) = 0 gives a two-sided p-value p_k; the
comparison stops and decides "different" as soon as p_k is at most the look's nominal level.

The levels: Lan & DeMets' α-spending (Biometrika 1983) with the O'Brien–Fleming-type function
α(t) = 2 − 2 Φ(z_{1−α/2} / √t), t = n_k / max_seeds: look k may spend α(t_k) − α(t_{k−1}) of
the error, almost nothing at the first looks (a decision there needs a very clear effect), most
at the last. The boundary that spends exactly that, given the earlier looks did not stop, comes
from the joint law of the looks' own statistics: the t statistics of the growing sample, with
n_k − 1 degrees of freedom each, computed on seeded Monte Carlo paths of normal differences
(`PATHS` of them, seed `PATHS_SEED`; the t statistic does not depend on the differences' scale,
so standard normals are the whole null). Why not the z statistics' law, as before: a t with
2 to 9 degrees of freedom mapped to the normal scale by its quantile does not keep the joint law
of a Brownian motion at small n, and the old boundaries said "different" 5.66 % ± 0.32 % of the
time at α = 0.05 (looks 3, 5, 7, 9, 10; 20,000 simulated comparisons).

The looks spend `SPENT_SHARE` (90 %) of α in all, not α: an exactly-α test would be measured at
5.0 % ± 0.3 % by a 20,000-comparison simulation, an interval across the promise; at 0.9 α the
measured rate and its whole 95 % interval stay under α (benchmarks/bench_sequential.py prints
it, with the power; tests/unit/test_sequential.py holds it). If no look decides: "no
difference shown with max_seeds pairs".

Why not AdaStop's permutation test: with 3 to 10 pairs, a sign-flip permutation test cannot
reach the small per-look levels at all (its smallest p-value with n pairs is 2 / 2^n); it is
reported beside the t-test as a check that does not assume normal differences.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


def spent(t: float, alpha: float) -> float:
    """α(t): the error spent by information fraction t (O'Brien–Fleming-type)."""
    if t <= 0:
        return 0.0
    z = stats.norm.ppf(1 - alpha / 2)
    return float(2 - 2 * stats.norm.cdf(z / math.sqrt(min(t, 1.0))))


PATHS = 400_000
PATHS_SEED = 0
SPENT_SHARE = 0.9  # the share of α the looks spend (see the module's docstring)


def t_statistics(paths: np.ndarray, counts: tuple[int, ...]) -> np.ndarray:
    """|t| of mean = 0 over the first n values of each row, for each n in `counts` (rows ×
    looks): the statistic the test computes, on every path at once."""
    sums = np.cumsum(paths, axis=1)
    squares = np.cumsum(paths * paths, axis=1)
    columns = []
    for n in counts:
        mean = sums[:, n - 1] / n
        variance = (squares[:, n - 1] - n * mean * mean) / (n - 1)
        columns.append(np.abs(mean) / np.sqrt(np.maximum(variance, 1e-300) / n))
    return np.stack(columns, axis=1)


def calibrated_boundaries(statistics: np.ndarray, targets: list[float]) -> list[float]:
    """Boundaries b_k on |statistic| such that, over these simulated paths, the share that
    first crosses at look k (|s_k| > b_k, no earlier crossing) is targets[k]: the α-spending
    boundaries of whatever joint law the paths follow (t statistics here; z statistics in the
    test that checks this against an independent computation)."""
    paths = len(statistics)
    alive = np.ones(paths, dtype=bool)
    boundaries = []
    for k, target in enumerate(targets):
        candidates = np.sort(statistics[alive, k])[::-1]
        crossing = round(target * paths)  # paths this look may stop
        if crossing == 0:
            boundary = float(candidates[0]) if len(candidates) else np.inf
        elif crossing < len(candidates):  # between the last that stops and the first that not
            boundary = float(0.5 * (candidates[crossing - 1] + candidates[crossing]))
        else:
            boundary = 0.0
        alive &= statistics[:, k] <= boundary
        boundaries.append(boundary)
    return boundaries


def spending_targets(counts: tuple[int, ...], alpha: float) -> list[float]:
    """What each look may spend: the increments of α(t) at t = n_k / max_seeds."""
    spent_by = [spent(n / counts[-1], alpha) for n in counts]
    return list(np.diff([0.0, *spent_by]))


@functools.cache
def nominal_levels(counts: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    """Two-sided nominal p-value levels of the paired t-test at looks of `counts` pairs that
    spend SPENT_SHARE · α(t) under the t statistics' joint law (seeded Monte Carlo, computed
    once per process, about a second)."""
    if counts[0] < 2:
        raise ValueError("the first look needs at least 2 pairs for a t statistic")
    rng = np.random.default_rng(PATHS_SEED)
    statistics = t_statistics(rng.standard_normal((PATHS, counts[-1])), counts)
    boundaries = calibrated_boundaries(statistics, spending_targets(counts, SPENT_SHARE * alpha))
    return tuple(
        float(2 * stats.t.sf(boundary, n - 1))
        for boundary, n in zip(boundaries, counts, strict=True)
    )


def looks(first: int, step: int, max_seeds: int) -> list[int]:
    """The numbers of pairs at each look: first, first + step, ..., max_seeds."""
    counts = list(range(first, max_seeds, step))
    return [*counts, max_seeds] if not counts or counts[-1] != max_seeds else counts


@dataclass(frozen=True)
class Look:
    pairs: int
    p_value: float | None
    level: float  # the nominal p-value level of this look's boundary
    decided: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "p_value": self.p_value,
            "level": self.level,
            "decided": self.decided,
        }


def paired_t_p(differences: np.ndarray) -> float | None:
    """Two-sided p-value of mean(differences) = 0; exact 0 or 1 when every pair differs alike."""
    if len(differences) < 2:
        return None
    if np.all(differences == differences[0]):
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def look_at(differences: np.ndarray, counts: list[int], k: int, alpha: float) -> Look:
    """Look k (0-based) over the first counts[k] pairs of `differences`."""
    level = nominal_levels(tuple(counts), alpha)[k]
    used = differences[: counts[k]]  # fewer where runs failed: the look says how many it had
    p_value = paired_t_p(used)
    return Look(len(used), p_value, level, p_value is not None and p_value <= level)


def run_sequence(differences: np.ndarray, counts: list[int], alpha: float) -> list[Look]:
    """Every look until one decides (or the last): what a sequential comparison would do with
    these differences arriving in this order."""
    taken = []
    for k in range(len(counts)):
        look = look_at(differences, counts, k, alpha)
        taken.append(look)
        if look.decided:
            break
    return taken


def sign_flip_p(differences: np.ndarray) -> float | None:
    """The sign-flip permutation p-value of mean(differences) = 0 (exact up to 2^16 flips)."""
    if len(differences) < 2:
        return None
    if np.all(differences == 0):
        return 1.0
    result = stats.permutation_test(
        (differences,),
        np.mean,
        permutation_type="samples",
        n_resamples=2**16,
        random_state=np.random.default_rng(0),
    )
    return float(result.pvalue)


METHOD = (
    "group-sequential paired t-test: looks at {looks} pairs, Lan–DeMets O'Brien–Fleming-type "
    "α-spending of {spent_share:.0%} of α = {alpha} over all looks, boundaries from the joint law "
    "of the looks' t statistics (seeded Monte Carlo); nominal p-value levels {levels}"
)
