"""Where the spread over seeds comes from: the standard deviation each source of randomness
causes alone, and its share of the spread when every source varies (`make benchmark VARY=...`).

Method (Bouthillier et al., "Accounting for variance in machine learning benchmarks", MLSys
2021): for each source, runs that vary that source's seed only (every other stream at the base
seed); `all` varies every stream, as a plain benchmark does. Per metric and source:
- std: the sample standard deviation (ddof=1) over that source's seeds;
- share: var(source) / var(all). Sources interact (and each estimate is noisy), so the shares
  need not add up to 1; a share near 1 says that source alone makes the spread.
- 95 % intervals: percentile bootstrap over seeds (`scipy.stats.bootstrap`, 10,000 resamples,
  a fixed numpy seed), the seeds of the source and of `all` resampled independently for the
  share (scipy's unpaired multi-sample resampling). With 5 seeds or so they are wide and the
  std's is biased narrow (a resample repeats seeds): read them as orders of magnitude. Why
  percentile and not BCa here: BCa's jackknife acceleration is undefined for a share whose
  denominator can resample to zero spread, and the intervals are read as orders of magnitude.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1))


def _percentile_interval(
    samples: tuple[np.ndarray, ...], statistic: Any, rng: np.random.Generator
) -> list[float | None]:
    """scipy's percentile bootstrap 95 % interval of `statistic` over independent resamples of
    each sample; an infinite bound (a share over a resample of `all` without spread) is None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples warn; their values are kept
        result = stats.bootstrap(
            samples,
            statistic,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method="percentile",
            vectorized=True,
            random_state=rng,
        )
    interval = result.confidence_interval
    return [float(bound) if np.isfinite(bound) else None for bound in (interval.low, interval.high)]


def _std_statistic(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.std(values, axis=axis, ddof=1)


def _share_statistic(values: np.ndarray, total: np.ndarray, axis: int = -1) -> np.ndarray:
    """var(source) / var(all); a resample of `all` with no spread makes the share infinite:
    kept, not dropped (dropping them would pull the interval down)."""
    spread, spread_all = np.var(values, axis=axis, ddof=1), np.var(total, axis=axis, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread_all > 0, spread / np.maximum(spread_all, 1e-300), np.inf)


def source_spread(per_source: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """{source: {n, std, std_ci95, share, share_ci95}} for one metric; `all` must be a source
    for the shares. A source with fewer than 2 values has no std (null)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    arrays = {source: np.asarray(values, dtype=np.float64) for source, values in per_source.items()}
    total = arrays.get("all")
    total_ok = total is not None and len(total) >= 2
    spread: dict[str, dict[str, Any]] = {}
    for source, values in arrays.items():
        row: dict[str, Any] = {
            "n": len(values),
            "mean": float(np.mean(values)) if len(values) else None,
        }
        if len(values) < 2:
            spread[source] = {
                **row,
                "std": None,
                "std_ci95": None,
                "share": None,
                "share_ci95": None,
            }
            continue
        row |= {
            "std": _std(values),
            "std_ci95": _percentile_interval((values,), _std_statistic, rng),
        }
        if total_ok and _std(total) > 0:  # type: ignore[arg-type]
            assert total is not None
            row["share"] = _std(values) ** 2 / _std(total) ** 2
            row["share_ci95"] = _percentile_interval((values, total), _share_statistic, rng)
        else:
            row |= {"share": None, "share_ci95": None}
        spread[source] = row
    return spread


def format_row(source: str, row: dict[str, Any], digits: int = 4) -> str:
    def interval(values: list[float] | None, scale: float = 1.0, fmt: str = f".{digits}f") -> str:
        if values is None:
            return "n/a"
        high = "∞" if values[1] is None else f"{values[1] * scale:{fmt}}"
        return f"[{values[0] * scale:{fmt}}, {high}]"

    if row["std"] is None:
        return f"| {source} | {row['n']} | n/a | | | |"
    share = "—" if source == "all" or row["share"] is None else f"{row['share'] * 100:.0f} %"
    share_ci = "" if source == "all" else interval(row["share_ci95"], 100, ".0f")
    return (
        f"| {source} | {row['n']} | {row['mean']:.{digits}f} | {row['std']:.{digits}f} "
        f"{interval(row['std_ci95'])} | {share} | {share_ci} |"
    )
