"""The sequential comparison's statistics, validated by simulation (no training): simulated
per-seed results of A and B, with a seed effect both share, as seed-paired runs have."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tools.sequential import looks, nominal_levels, paired_t_p, run_sequence, sign_flip_p, spent

ALPHA = 0.05
COUNTS = looks(3, 2, 10)  # 3, 5, 7, 9, 10 pairs
SIMULATIONS = 1000


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
    assert levels[0] < 0.001 and 0.03 < levels[-1] < ALPHA


@pytest.mark.slow
def test_under_no_difference_the_false_positive_rate_is_at_most_alpha() -> None:
    rate, fixed_rate, _ = outcomes(effect=0.0)
    low, high = clopper_pearson(round(rate * SIMULATIONS), SIMULATIONS)
    print(f"null: sequential {rate:.3f} [{low:.3f}, {high:.3f}], fixed design {fixed_rate:.3f}")
    assert rate <= ALPHA and low < ALPHA


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
