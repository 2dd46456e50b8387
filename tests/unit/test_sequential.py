"""The sequential comparison's statistics, validated by simulation (no training): simulated
per-seed results of A and B, with a seed effect both share, as seed-paired runs have.

The 20,000-comparison null check runs vectorized (a second or two): `decisions` computes every
look's t-test p-value for all simulated comparisons at once, and is first held equal to
`run_sequence` itself, decision for decision, on a few hundred of them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from tools.sequential import (
    SPENT_SHARE,
    calibrated_boundaries,
    looks,
    nominal_levels,
    paired_t_p,
    run_sequence,
    sign_flip_p,
    spending_targets,
    spent,
)

ALPHA = 0.05
COUNTS = looks(3, 2, 10)  # 3, 5, 7, 9, 10 pairs
SIMULATIONS = 1000
NULL_SIMULATIONS = 20_000


def simulated_differences(rng: np.random.Generator, effect: float) -> np.ndarray:
    """B − A over 10 seeds: a seed effect (std 1) shared by A and B cancels; what remains is
    each run's own noise (std 0.5 each) plus the effect."""
    seed_effect = rng.normal(0.0, 1.0, COUNTS[-1])
    a = seed_effect + rng.normal(0.0, 0.5, COUNTS[-1])
    b = seed_effect + effect + rng.normal(0.0, 0.5, COUNTS[-1])
    return b - a


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
    low = stats.beta.ppf(0.025, successes, trials - successes + 1) if successes else 0.0
    high = stats.beta.ppf(0.975, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def outcomes(effect: float) -> tuple[float, float, float]:
    """(sequential rejection rate, fixed-design rejection rate at 10 pairs, mean pairs used)."""
    rng = np.random.default_rng(2021)
    sequential, fixed, used = 0, 0, []
    for _ in range(SIMULATIONS):
        differences = simulated_differences(rng, effect)
        taken = run_sequence(differences, COUNTS, ALPHA)
        sequential += taken[-1].decided
        used.append(taken[-1].pairs)
        fixed += paired_t_p(differences) <= ALPHA  # type: ignore[operator]
    return sequential / SIMULATIONS, fixed / SIMULATIONS, float(np.mean(used))


def test_the_spending_adds_up_to_alpha_and_spends_little_early() -> None:
    assert COUNTS == [3, 5, 7, 9, 10]
    increments = [
        spent(n / 10, ALPHA) - spent(m / 10, ALPHA)
        for m, n in zip([0, *COUNTS[:-1]], COUNTS, strict=True)
    ]
    assert abs(sum(increments) - ALPHA) < 1e-12 and increments[0] < 0.001
    levels = nominal_levels(tuple(COUNTS), ALPHA)
    assert list(levels) == sorted(levels)  # a look later may decide on a larger p-value
    assert levels[0] < 0.001 and 0.02 < levels[-1] < ALPHA
    # the first look alone: its level is what it may spend (±20 %: ~100 of 400,000 paths)
    assert levels[0] == pytest.approx(spent(0.3, SPENT_SHARE * ALPHA), rel=0.2)


def decisions(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decided, pairs used) of the sequential test for each row of simulated differences."""
    levels = np.array(nominal_levels(tuple(COUNTS), ALPHA))
    p_values = np.stack(
        [stats.ttest_1samp(differences[:, :n], 0.0, axis=1).pvalue for n in COUNTS], axis=1
    )
    crossed = p_values <= levels
    decided = crossed.any(axis=1)
    first = np.where(decided, crossed.argmax(axis=1), len(COUNTS) - 1)
    return decided, np.array(COUNTS)[first]


def test_the_vectorized_simulation_decides_as_run_sequence_does() -> None:
    rng = np.random.default_rng(7)
    differences = rng.normal(size=(300, COUNTS[-1])) + rng.choice([0.0, 0.8], size=(300, 1))
    decided, used = decisions(differences)
    for row, is_decided, pairs in zip(differences, decided, used, strict=True):
        taken = run_sequence(row, COUNTS, ALPHA)
        assert (taken[-1].decided, taken[-1].pairs) == (is_decided, pairs)
    assert 0 < decided.sum() < len(decided)  # both outcomes were exercised


def test_under_no_difference_the_false_positive_rate_is_below_alpha_on_20000_comparisons() -> None:
    """The promise, with the simulation's own uncertainty: the upper end of the 95 % interval
    of the false "different" rate is at most α. (The old boundaries, from the z statistics'
    law, measured 5.66 % ± 0.32 % here.)"""
    rng = np.random.default_rng(2026)  # not the calibration's seed
    decided, _ = decisions(rng.normal(size=(NULL_SIMULATIONS, COUNTS[-1])))
    low, high = clopper_pearson(int(decided.sum()), NULL_SIMULATIONS)
    print(f"null: {decided.mean():.4f} [{low:.4f}, {high:.4f}] of {NULL_SIMULATIONS}")
    assert high <= ALPHA
    assert low > 0.8 * SPENT_SHARE * ALPHA  # and not wastefully conservative


def test_the_calibration_reproduces_z_boundaries_computed_by_numerical_integration() -> None:
    """An independent check of the calibration: on z statistics (a Brownian motion observed at
    the looks) its Monte Carlo boundaries equal those that scipy's multivariate normal
    integration (Genz) gives for the same spending, look by look."""
    counts = (3, 5, 7, 9, 10)
    targets = spending_targets(counts, ALPHA)
    rng = np.random.default_rng(11)
    sums = np.cumsum(rng.normal(size=(400_000, len(counts))) * np.sqrt(np.diff([0, *counts])), 1)
    simulated = calibrated_boundaries(np.abs(sums / np.sqrt(counts)), targets)
    correlation = np.sqrt(np.minimum.outer(counts, counts) / np.maximum.outer(counts, counts))

    def stays_inside(bounds: list[float]) -> float:
        """P(|Z_1| ≤ b_1, ..., |Z_j| ≤ b_j) by numerical integration."""
        if len(bounds) == 1:
            return float(2 * stats.norm.cdf(bounds[0]) - 1)
        law = stats.multivariate_normal(
            np.zeros(len(bounds)), correlation[: len(bounds), : len(bounds)]
        )
        limits = np.array(bounds)
        return float(law.cdf(limits, lower_limit=-limits))

    integrated: list[float] = []
    for target in targets:
        before = stays_inside(integrated) if integrated else 1.0

        def spends(c: float, before: float = before, target: float = target) -> float:
            return before - stays_inside([*integrated, c]) - target

        integrated.append(optimize.brentq(spends, 0.5, 8.0))
    assert simulated == pytest.approx(integrated, abs=0.03)


@pytest.mark.slow
def test_on_a_planted_effect_it_stops_early_with_the_fixed_designs_power() -> None:
    for effect, at_least in ((0.7, 0.5), (1.5, 0.95)):
        power, fixed_power, used = outcomes(effect)
        print(f"effect {effect}: power {power:.3f} (fixed {fixed_power:.3f}), pairs {used:.2f}")
        assert power >= at_least and power >= fixed_power - 0.1
        assert used < COUNTS[-1]  # seeds saved against the fixed design's 10


def test_a_against_a_never_decides() -> None:
    zeros = np.zeros(10)
    taken = run_sequence(zeros, COUNTS, ALPHA)
    assert [look.decided for look in taken] == [False] * len(COUNTS)
    assert sign_flip_p(zeros) == 1.0


def test_the_sign_flip_p_value_is_exact_for_few_pairs() -> None:
    assert sign_flip_p(np.array([1.0, 2.0, 3.0])) == 2 / 8  # only all-positive or all-negative
