"""How much per-sample augmentation seeding costs: `make bench-seeding`.

Measures, per sample, on the default 32x32 synthetic pipeline, loading a sample (read, augment,
to tensor) three ways: unseeded (the pipeline's own generators), with this template's per-sample
seeding (Philox repositioned in place + the python facade), and with the naive construction
(SeedSequence + new generators + Compose.set_random_state per sample). The cost of seeding is the
difference to unseeded loading, end to end: a reseed measured alone in a tight loop (cache-hot)
looks several times cheaper than it is. Interleaved repetitions; minimums reported (the cost of the
code, not of a noisy machine). Targets of the seeding issue: <= 15 us and <= 5 % of loading.
Writes bench-seeding.json and .md to --output-dir (runs/bench/seeding).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from data.augment import pipeline
from data.loaders import SeededAugmentedDataset
from data.synthetic import SyntheticDataConfig, build_synthetic
from seeding import SampleKey, SampleRandomness, WorkerSeeder, data_parallel
from tools.report import bench_folder, write_report


def per_call_us(function: Callable[[int], object], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        function(index)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--output-dir", default=bench_folder("seeding"))
    arguments = parser.parse_args()

    plan = data_parallel(42, 0)
    config = SyntheticDataConfig(synthetic={"train_size": arguments.samples, "val_size": 8})
    splits = build_synthetic(config)
    transform = pipeline(config.augment.train, config.image_size, splits.mean, splits.std)
    randomness = SampleRandomness(plan.augment_key())
    dataset = SeededAugmentedDataset(splits.train, transform, randomness, WorkerSeeder(plan))

    def unseeded_item(index: int) -> object:
        image, label = splits.train[index]
        return transform(image=image)["image"], label

    def seeded_item(index: int) -> object:
        return dataset[SampleKey(index, 1)]

    key = plan.augment_key()

    def naive_item(index: int) -> object:
        sequence = np.random.SeedSequence(entropy=[key[0], key[1]], spawn_key=(1, index))
        generator = np.random.Generator(np.random.PCG64(sequence))
        transform.set_random_state(generator, random.Random(int(sequence.generate_state(1)[0])))
        return unseeded_item(index)

    def own_generators() -> None:
        transform.set_random_state(np.random.default_rng(0), random.Random(0))

    def bound_to_template() -> None:
        transform.set_random_state(randomness.numpy, randomness.python)

    cases = {
        "load_unseeded": (own_generators, unseeded_item),
        "load_seeded": (bound_to_template, seeded_item),
        "load_naive": (own_generators, naive_item),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(arguments.repeats):
        for name, (prepare, function) in cases.items():
            prepare()
            timings[name].append(per_call_us(function, arguments.samples))
    best = {name: min(values) for name, values in timings.items()}
    seeding = best["load_seeded"] - best["load_unseeded"]
    naive = best["load_naive"] - best["load_unseeded"]
    result = {
        **{f"{name}_us": value for name, value in best.items()},
        "seeding_us": seeding,
        "seeding_share_of_loading": seeding / best["load_seeded"],
        "naive_seeding_us": naive,
        "naive_share_of_loading": naive / best["load_naive"],
        "median_us": {name: statistics.median(values) for name, values in timings.items()},
    }
    lines = [
        f"loading a sample, unseeded:          {best['load_unseeded']:6.1f} us",
        f"loading a sample, per-sample seeded: {best['load_seeded']:6.1f} us",
        f"loading a sample, naive seeding:     {best['load_naive']:6.1f} us",
        f"per-sample seeding costs {seeding:5.1f} us/sample = "
        f"{100 * result['seeding_share_of_loading']:4.1f} % of loading (targets: <= 15 us, <= 5 %)",
        f"naive seeding costs      {naive:5.1f} us/sample = "
        f"{100 * result['naive_share_of_loading']:4.1f} % of loading",
    ]
    write_report(arguments.output_dir, "bench-seeding", result, lines)


if __name__ == "__main__":
    main()
