"""How many seeds a decision needs: a group-sequential paired test for `make compare SEQUENTIAL=1`.

Seed pairs are added in rounds (looks): `first` pairs, then `step` more, up to `max_seeds`. At
look k, with n_k pairs, the paired t-test of mean(B − A) = 0 gives a two-sided p-value p_k; the
comparison stops and decides "different" as soon as p_k is at most the look's nominal level.

The levels: Lan & DeMets' α-spending (Biometrika 1983) with the O'Brien–Fleming-type function
α(t) = 2 − 2 Φ(z_{1−α/2} / √t), t = n_k / max_seeds: look k may spend α(t_k) − α(t_{k−1}) of
the error, almost nothing at the first looks (a decision there needs a very clear effect), most
at the last. The boundary that spends exactly that, given the earlier looks did not stop, comes
from the joint law of the looks' statistics (a Brownian motion observed at n_1 < n_2 < ...):
exact for the first look (its level is α(t_1)), by simulating that law for the later ones
(1,000,000 paths, a fixed seed); a look's nominal level is the two-sided p-value of its
boundary. Each p_k is the exact t-test p-value, turned into
the normal scale by its quantile. The family-wise error over all looks is then α under the
normal approximation; tests/unit/test_sequential.py measures it, and the power against the
fixed design, by simulation. If no look decides: "no difference shown with max_seeds pairs".

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


PATHS = 1_000_000
PATHS_SEED = 0


@functools.cache
def nominal_levels(counts: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    """Two-sided nominal p-value levels of the looks at `counts` pairs that spend α(t) exactly
    (Monte Carlo over the statistics' joint law)."""
    rng = np.random.default_rng(PATHS_SEED)
    widths = np.diff([0, *counts])
    sums = np.cumsum(rng.normal(size=(PATHS, len(counts))) * np.sqrt(widths), axis=1)
    z = np.abs(sums / np.sqrt(counts))
    alive = np.ones(PATHS, dtype=bool)
    levels, previous = [], 0.0
    for k, n in enumerate(counts):
        target = spent(n / counts[-1], alpha) - previous
        previous += target
        if k == 0:  # the first look alone: its boundary is the marginal quantile
            boundary = float(stats.norm.ppf(1 - target / 2))
        else:
            candidates = np.sort(z[alive, k])[::-1]
            crossing = round(target * PATHS)  # paths this look may stop
            boundary = candidates[crossing] if crossing < len(candidates) else 0.0
        alive &= z[:, k] <= boundary
        levels.append(float(2 * (1 - stats.norm.cdf(boundary))))
    return tuple(levels)


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
    "α-spending (α = {alpha} over all looks), boundaries from the looks' joint law by simulation; "
    "nominal p-value levels {levels}"
)
