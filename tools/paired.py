"""Is B better than A? Seed-paired statistics of one metric, from scipy and numpy.

Why pairing is valid here: in this template a seed fixes the data order, the initialisation and
every sample's augmentation, so runs of A and B with the same seed share those draws (when the
change leaves them alone) and most of the seed-to-seed variation cancels in B - A. The report
keeps the unpaired (Welch) interval beside the paired one so that what pairing bought shows.

- paired Student-t 95 % CI of mean(B - A): `scipy.stats.ttest_rel(b, a).confidence_interval()`;
- paired bootstrap 95 % CI: `scipy.stats.bootstrap` of the mean difference, BCa, a fixed seed;
- unpaired Welch 95 % CI: `scipy.stats.ttest_ind(b, a, equal_var=False).confidence_interval()`;
- sign-flip permutation p-value of mean(B - A) = 0 (tools/sequential.py): no normality assumed;
- P(B > A): the share of seed pairs where B is better (ties count one half), as rliable
  (Agarwal et al., 2021) defines the probability of improvement.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from tools.sequential import sign_flip_p

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


def higher_is_better(metric: str) -> bool:
    """Losses and errors go down; accuracies and everything else go up."""
    return not any(word in metric for word in ("loss", "error", "perplexity"))


def _interval(low: float, high: float) -> list[float] | None:
    return None if math.isnan(low) or math.isnan(high) else [float(low), float(high)]


def _constant_interval(differences: np.ndarray) -> list[float] | None:
    """Every pair differs by the same amount: no spread, so the interval is that one point."""
    if np.all(differences == differences[0]):
        return [float(differences[0]), float(differences[0])]
    return None


def paired_t_interval(a: np.ndarray, b: np.ndarray) -> list[float] | None:
    point = _constant_interval(b - a)
    if point is not None:
        return point
    result = stats.ttest_rel(b, a).confidence_interval(CONFIDENCE)
    return _interval(result.low, result.high)


def paired_bootstrap_interval(a: np.ndarray, b: np.ndarray) -> list[float] | None:
    differences = b - a
    point = _constant_interval(differences)
    if point is not None:
        return point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on tiny samples; the interval stands
        result = stats.bootstrap(
            (differences,),
            np.mean,
            confidence_level=CONFIDENCE,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method="BCa",
            random_state=np.random.default_rng(BOOTSTRAP_SEED),
        )
    interval = result.confidence_interval
    return _interval(interval.low, interval.high)


def welch_interval(a: np.ndarray, b: np.ndarray) -> list[float] | None:
    if np.var(a) == 0 and np.var(b) == 0:
        difference = float(np.mean(b) - np.mean(a))
        return [difference, difference]
    result = stats.ttest_ind(b, a, equal_var=False).confidence_interval(CONFIDENCE)
    return _interval(result.low, result.high)


def probability_of_improvement(a: np.ndarray, b: np.ndarray, higher_better: bool) -> float:
    better = b > a if higher_better else b < a
    return float(np.mean(better + 0.5 * (b == a)))


def verdict(interval: list[float] | None, higher_better: bool, digits: int = 4) -> str:
    if interval is None:
        return "fewer than 2 seed pairs: no interval, no verdict"
    low, high = interval
    if low <= 0.0 <= high:
        return "no evidence of a difference at 95 %"
    direction = "higher" if low > 0 else "lower"
    better = (low > 0) == higher_better
    return (
        f"B {direction} ({'better' if better else 'worse'}), "
        f"95 % CI [{low:+.{digits}f}, {high:+.{digits}f}]"
    )


def compare_metric(per_seed: dict[int, tuple[float, float]], metric: str) -> dict[str, Any]:
    """Everything the report says about one metric, from the seeds completed in both variants.

    scipy's warnings are kept out of the terminal: identical or near-identical differences (A
    against A, a metric that saturates) make it warn of "precision loss" or degenerate data,
    and the report already says what such intervals mean (a zero-width or n/a interval)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", getattr(stats, "DegenerateDataWarning", RuntimeWarning))
        return _compare_metric(per_seed, metric)


def _compare_metric(per_seed: dict[int, tuple[float, float]], metric: str) -> dict[str, Any]:
    seeds = sorted(per_seed)
    a = np.array([per_seed[seed][0] for seed in seeds], dtype=np.float64)
    b = np.array([per_seed[seed][1] for seed in seeds], dtype=np.float64)
    higher_better = higher_is_better(metric)
    enough = len(seeds) >= 2
    paired = paired_t_interval(a, b) if enough else None
    return {
        "per_seed": {
            str(seed): {"a": float(x), "b": float(y), "diff": float(y - x)}
            for seed, x, y in zip(seeds, a, b, strict=True)
        },
        "n_pairs": len(seeds),
        "a_mean": float(np.mean(a)) if seeds else None,
        "b_mean": float(np.mean(b)) if seeds else None,
        "diff_mean": float(np.mean(b - a)) if seeds else None,
        "diff_std": float(np.std(b - a, ddof=1)) if enough else None,
        "paired_ci95": paired,
        "bootstrap_ci95": paired_bootstrap_interval(a, b) if enough else None,
        "unpaired_ci95": welch_interval(a, b) if enough else None,
        "sign_flip_p": sign_flip_p(b - a) if enough else None,
        "p_improvement": probability_of_improvement(a, b, higher_better) if seeds else None,
        "higher_is_better": higher_better,
        "verdict": verdict(paired, higher_better),
    }
