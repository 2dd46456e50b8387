"""The seed statistics on scipy: the new numbers held to the old hand-written code's on fixed
data, within stated tolerances.

The old numbers below were computed once (2026-12-05, commit 30a149b, numpy 2.4.6, scipy
1.17.1) from the code this change replaced: tools/variance.py's own numpy percentile bootstrap
(`rng.integers` resamples, 10,000 of them, seed 0) and tools/paired.py / tools/sequential.py as
they stood. Why tolerances and not equality: scipy.stats.bootstrap draws its resamples in
another order from the same seed, so a bootstrap bound moves by its Monte Carlo error. That error
was measured by rerunning the new code with seeds 1-5: the std bounds of 5 values move by < 2 %
(few distinct resampled stds), the share bounds (a ratio of two variances of 5 values, whose
97.5th percentile sits in a heavy tail) by up to ±12 %; the tolerances are about twice that.
"""

from __future__ import annotations

import pytest

from tools.paired import compare_metric
from tools.variance import source_spread

SOURCES = {
    "init": [0.9350, 0.9310, 0.9380, 0.9340, 0.9320],
    "order": [0.9290, 0.9410, 0.9350, 0.9230, 0.9400],
    "dropout": [0.9360, 0.9300, 0.9390, 0.9330, 0.9280],
    "all": [0.9300, 0.9420, 0.9340, 0.9260, 0.9380],
}
# source: (std, std_ci95, share, share_ci95) from the old tools/variance.py
OLD_SPREAD = {
    "init": (
        0.0027386127875257925,
        [0.0010954451, 0.0035071356],
        0.1875,
        [0.0246402138, 1.2916666667],
    ),
    "order": (0.007602631123499241, [0.0025099801, 0.0095026312], 1.445, [0.1574976852, 9.19125]),
    "dropout": (
        0.004438468204234397,
        [0.0016431677, 0.0056124861],
        0.4925,
        [0.0740740741, 3.34375],
    ),
    "all": (0.006324555320336712, [0.0021908902, 0.0081975606], 1.0, [0.1515151515, 6.6]),
}
STD_TOLERANCE = 0.05  # relative, per bound
SHARE_TOLERANCE = 0.25  # relative, per bound

A = [0.9350, 0.9310, 0.9380, 0.9340, 0.9320, 0.9300]
B = [0.9010, 0.8890, 0.9300, 0.8720, 0.9150, 0.8900]
OLD_PAIRED = {
    "paired_ci95": [-0.054013264862136326, -0.013653401804530368],
    "bootstrap_ci95": [-0.047833333333333374, -0.01966666666666665],
    "unpaired_ci95": [-0.0554554089525973, -0.01221125771406991],
    "sign_flip_p": 0.03125,
    "p_improvement": 0.0,
}


def test_variance_by_source_on_scipy_bootstrap_matches_the_old_numbers() -> None:
    spread = source_spread(SOURCES)
    for source, (std, std_ci, share, share_ci) in OLD_SPREAD.items():
        row = spread[source]
        assert row["std"] == pytest.approx(std, rel=1e-12)  # no resampling: the same number
        assert row["share"] == pytest.approx(share, rel=1e-9)
        assert row["std_ci95"] == pytest.approx(std_ci, rel=STD_TOLERANCE)
        assert row["share_ci95"] == pytest.approx(share_ci, rel=SHARE_TOLERANCE)
    assert source_spread(SOURCES) == spread  # a fixed seed: the same report twice


def test_an_all_without_spread_in_a_resample_keeps_an_open_upper_bound() -> None:
    # two of three `all` values equal: a third of the resamples have no spread, shares infinite
    spread = source_spread({"init": [0.1, 0.2, 0.3], "all": [0.5, 0.5, 0.6]})
    low, high = spread["init"]["share_ci95"]
    assert high is None and low == 0.0  # a ninth of the init resamples have no spread either


def test_paired_statistics_match_the_old_numbers() -> None:
    result = compare_metric({i: pair for i, pair in enumerate(zip(A, B, strict=True))}, "val_acc")
    for key, old in OLD_PAIRED.items():
        assert result[key] == pytest.approx(old, rel=1e-9), key  # the same scipy calls
