"""The sequential comparison's error rate and power, measured: `make bench-sequential`.

    python -m benchmarks.bench_sequential [--simulations 20000] [--max-seeds 10] [--alpha 0.05]

Simulated seed-paired comparisons (no training): B − A over `max-seeds` seeds is normal noise
plus an effect (in units of the differences' std), looks at 3, 5, ... pairs as `make compare
SEQUENTIAL=1` takes them. For each effect: how often the test says "different" (with a
Clopper–Pearson 95 % interval), the fixed design's rate at max-seeds pairs, and the mean number
of pairs used. Effect 0 is the false "different" rate the test promises to keep at α. For
contrast, the boundaries the template used before (from the z statistics' joint law, the t
p-value mapped to the normal scale) on the same simulations. Writes bench-sequential.json/.md.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from scipy import stats

from tools.report import bench_folder, write_report
from tools.sequential import calibrated_boundaries, looks, nominal_levels, spending_targets

EFFECTS = (0.0, 0.5, 1.0, 1.5)
SEED = 2026  # not the calibration's (tools/sequential.PATHS_SEED)


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
    low = stats.beta.ppf(0.025, successes, trials - successes + 1) if successes else 0.0
    high = stats.beta.ppf(0.975, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def z_law_levels(counts: tuple[int, ...], alpha: float) -> np.ndarray:
    """The old boundaries: the same spending of the whole α, on a Brownian motion's law."""
    rng = np.random.default_rng(0)
    sums = np.cumsum(rng.normal(size=(400_000, len(counts))) * np.sqrt(np.diff([0, *counts])), 1)
    boundaries = calibrated_boundaries(
        np.abs(sums / np.sqrt(counts)), spending_targets(counts, alpha)
    )
    return 2 * stats.norm.sf(np.array(boundaries))


def outcomes(
    differences: np.ndarray, counts: list[int], levels: np.ndarray, alpha: float
) -> dict[str, Any]:
    p_values = np.stack(
        [stats.ttest_1samp(differences[:, :n], 0.0, axis=1).pvalue for n in counts], axis=1
    )
    crossed = p_values <= levels
    decided = crossed.any(axis=1)
    used = np.array(counts)[np.where(decided, crossed.argmax(axis=1), len(counts) - 1)]
    low, high = clopper_pearson(int(decided.sum()), len(decided))
    return {
        "rate": float(decided.mean()),
        "ci95": [low, high],
        "fixed_design_rate": float((p_values[:, -1] <= alpha).mean()),
        "mean_pairs": float(used.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sequential")
    parser.add_argument("--simulations", type=int, default=20_000)
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--output-dir", default=bench_folder("sequential"))
    arguments = parser.parse_args()
    counts = looks(3, 2, arguments.max_seeds)
    levels = np.array(nominal_levels(tuple(counts), arguments.alpha))
    old_levels = z_law_levels(tuple(counts), arguments.alpha)
    rng = np.random.default_rng(SEED)
    rows: dict[str, Any] = {}
    lines = [
        f"# Sequential comparison: {arguments.simulations} simulated comparisons per effect, "
        f"looks at {', '.join(map(str, counts))} pairs, α = {arguments.alpha}",
        "",
        f"- nominal p-value levels (t statistics' law): {', '.join(f'{x:.4g}' for x in levels)}",
        f"- old levels (z statistics' law): {', '.join(f'{x:.4g}' for x in old_levels)}",
        "",
        "| effect (std of B − A) | says different [95 % CI] | old boundaries | fixed design "
        f"({counts[-1]} pairs, α) | mean pairs used |",
        "|---|---|---|---|---|",
    ]
    for effect in EFFECTS:
        differences = rng.normal(size=(arguments.simulations, counts[-1])) + effect
        new = outcomes(differences, counts, levels, arguments.alpha)
        old = outcomes(differences, counts, old_levels, arguments.alpha)
        rows[str(effect)] = {"new": new, "old": old}
        lines.append(
            f"| {effect} | {new['rate']:.2%} [{new['ci95'][0]:.2%}, {new['ci95'][1]:.2%}] | "
            f"{old['rate']:.2%} [{old['ci95'][0]:.2%}, {old['ci95'][1]:.2%}] | "
            f"{new['fixed_design_rate']:.2%} | {new['mean_pairs']:.2f} |"
        )
    data = {"counts": counts, "alpha": arguments.alpha, "levels": list(levels), "effects": rows}
    write_report(arguments.output_dir, "bench-sequential", data, lines)


if __name__ == "__main__":
    main()
