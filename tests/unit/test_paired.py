"""The comparison's statistics, each number checked against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tools.paired import compare_metric, higher_is_better

A = [0.801, 0.774, 0.812, 0.790, 0.768]
B = [0.823, 0.781, 0.840, 0.806, 0.779]


def by_seed(a: list[float], b: list[float]) -> dict[int, tuple[float, float]]:
    return {seed: (x, y) for seed, (x, y) in enumerate(zip(a, b, strict=True))}


def test_paired_t_interval_is_mean_difference_plus_minus_t_times_standard_error() -> None:
    result = compare_metric(by_seed(A, B), "val_acc")
    d = np.array(B) - np.array(A)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert result["diff_mean"] == pytest.approx(d.mean())
    assert result["paired_ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert result["per_seed"]["2"] == pytest.approx({"a": 0.812, "b": 0.840, "diff": 0.028})


def test_welch_interval_uses_the_welch_satterthwaite_degrees_of_freedom() -> None:
    result = compare_metric(by_seed(A, B), "val_acc")
    a, b = np.array(A), np.array(B)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    difference = b.mean() - a.mean()
    assert result["unpaired_ci95"] == pytest.approx([difference - half, difference + half])
    width = np.diff(result["paired_ci95"])[0]
    assert width < np.diff(result["unpaired_ci95"])[0]  # what pairing buys on correlated seeds


def test_bootstrap_interval_agrees_with_a_plain_numpy_percentile_bootstrap() -> None:
    result = compare_metric(by_seed(A, B), "val_acc")
    d = np.array(B) - np.array(A)
    rng = np.random.default_rng(12345)
    means = d[rng.integers(0, len(d), (50_000, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    width = high - low
    assert result["bootstrap_ci95"][0] == pytest.approx(low, abs=0.25 * width)
    assert result["bootstrap_ci95"][1] == pytest.approx(high, abs=0.25 * width)
    assert compare_metric(by_seed(A, B), "val_acc")["bootstrap_ci95"] == result["bootstrap_ci95"]


def test_probability_of_improvement_and_direction() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0]
    higher = compare_metric(by_seed(a, b), "val_acc")
    lower = compare_metric(by_seed(a, b), "val_loss")
    assert higher["p_improvement"] == (1 + 0.5 + 0 + 1) / 4
    assert lower["p_improvement"] == (0 + 0.5 + 1 + 0) / 4
    assert higher_is_better("val_acc") and not higher_is_better("val_loss")


def test_verdicts_are_direction_aware() -> None:
    better_loss = compare_metric(by_seed([2.0, 2.1, 1.9], [1.5, 1.7, 1.4]), "val_loss")
    assert better_loss["verdict"].startswith("B lower (better), 95 % CI [")
    worse_acc = compare_metric(by_seed(B, A), "val_acc")
    assert worse_acc["verdict"].startswith("B lower (worse)")
    noise = compare_metric(by_seed([0.5, 0.6, 0.4], [0.6, 0.4, 0.5]), "val_acc")
    assert noise["verdict"] == "no evidence of a difference at 95 %"


def test_identical_runs_give_exact_zeros_and_one_pair_gives_no_interval() -> None:
    same = compare_metric(by_seed(A, A), "val_acc")
    assert same["diff_mean"] == 0.0 and same["paired_ci95"] == [0.0, 0.0]
    assert same["bootstrap_ci95"] == [0.0, 0.0] and same["p_improvement"] == 0.5
    assert same["verdict"] == "no evidence of a difference at 95 %"
    one = compare_metric({3: (0.5, 0.6)}, "val_acc")
    assert one["paired_ci95"] is None and one["unpaired_ci95"] is None
    assert one["verdict"].startswith("fewer than 2 seed pairs")
