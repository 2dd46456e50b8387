"""Mean ± std and a 95 % confidence interval over seeds.

Method: sample standard deviation (ddof=1) and the two-sided Student-t interval
mean ± t(0.975, n-1) · std / sqrt(n), which accounts for estimating the std from few seeds
(with 3 seeds t = 4.30, not 1.96). With one seed, std and the interval are undefined (null).
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats


def summarize(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            "ci95_low": None,
            "ci95_high": None,
        }
    mean = math.fsum(values) / n
    summary: dict[str, Any] = {
        "n": n,
        "mean": mean,
        "std": None,
        "min": min(values),
        "max": max(values),
    }
    if n < 2:
        return {**summary, "ci95_low": None, "ci95_high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half_width = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {**summary, "std": std, "ci95_low": mean - half_width, "ci95_high": mean + half_width}


def aggregate(
    seed_results: list[dict[str, Any]], metrics: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Summaries over the seeds that completed; failed seeds are left out (and counted elsewhere)."""
    completed = [result for result in seed_results if result["status"] == "completed"]
    return {
        metric: summarize([float(result["metrics"][metric]) for result in completed])
        for metric in metrics
    }


def format_summary(summary: dict[str, Any], digits: int = 4) -> str:
    if summary["n"] == 0:
        return "n/a"
    if summary["std"] is None:
        return f"{summary['mean']:.{digits}f} (n=1)"
    return (
        f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} "
        f"[{summary['ci95_low']:.{digits}f}, {summary['ci95_high']:.{digits}f}]"
    )
