"""Multi-seed benchmark: aggregation, end-to-end report, reuse, resume and an isolated failure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tools.aggregate import aggregate, summarize


def test_summary_matches_numpy_and_scipy() -> None:
    values = [0.91, 0.935, 0.95, 0.902, 0.921]
    summary = summarize(values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert summary["n"] == 5
    assert summary["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (summary["min"], summary["max"]) == (0.902, 0.95)
    assert summary["ci95_low"] == pytest.approx(low, rel=1e-12)
    assert summary["ci95_high"] == pytest.approx(high, rel=1e-12)


def test_one_seed_has_no_spread_and_failed_seeds_are_left_out() -> None:
    assert summarize([0.9]) == {
        "n": 1,
        "mean": 0.9,
        "std": None,
        "min": 0.9,
        "max": 0.9,
        "ci95_low": None,
        "ci95_high": None,
    }
    results = [
        {"status": "completed", "metrics": {"val_acc": 0.8}},
        {"status": "failed", "metrics": None},
        {"status": "completed", "metrics": {"val_acc": 0.9}},
    ]
    summary = aggregate(results, ("val_acc",))["val_acc"]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(0.85)
    assert summary["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
