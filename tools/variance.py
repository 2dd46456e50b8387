"""Where the spread over seeds comes from: the standard deviation each source of randomness
causes alone, and its share of the spread when every source varies (`make benchmark VARY=...`).

Method (Bouthillier et al., "Accounting for variance in machine learning benchmarks", MLSys
2021): for each source, runs that vary that source's seed only (every other stream at the base
seed); `all` varies every stream, as a plain benchmark does. Per metric and source:
- std: the sample standard deviation (ddof=1) over that source's seeds;
- share: var(source) / var(all). Sources interact (and each estimate is noisy), so the shares
  need not add up to 1; a share near 1 says that source alone makes the spread.
- 95 % intervals: percentile bootstrap over seeds (10,000 resamples, a fixed numpy seed), the
  seeds of the source and of `all` resampled independently for the share. With 5 seeds or so
  they are wide and the std's is biased narrow (a resample repeats seeds): read them as
  orders of magnitude.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1))


def _bootstrap_stds(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    return np.std(values[picks], axis=1, ddof=1)


def _interval(samples: np.ndarray) -> list[float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return [float(low), float(high)]


def source_spread(per_source: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """{source: {n, std, std_ci95, share, share_ci95}} for one metric; `all` must be a source
    for the shares. A source with fewer than 2 values has no std (null)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    arrays = {source: np.asarray(values, dtype=np.float64) for source, values in per_source.items()}
    total = arrays.get("all")
    total_ok = total is not None and len(total) >= 2
    total_boot = _bootstrap_stds(total, rng) if total_ok else None
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
        boots = _bootstrap_stds(values, rng)
        row |= {"std": _std(values), "std_ci95": _interval(boots)}
        if total_ok and _std(total) > 0:  # type: ignore[arg-type]
            assert total is not None and total_boot is not None
            row["share"] = _std(values) ** 2 / _std(total) ** 2
            # a resample of `all` with no spread makes any share infinite: kept, not dropped
            # (dropping them would pull the interval down); an infinite bound is null
            spread_all = np.maximum(total_boot, 1e-300) ** 2
            shares = np.where(total_boot > 0, boots**2 / spread_all, np.inf)
            low, high = np.percentile(shares, [2.5, 97.5])
            row["share_ci95"] = [float(low), float(high) if np.isfinite(high) else None]
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
