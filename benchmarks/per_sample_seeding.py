"""How much per-sample augmentation seeding costs: `make bench-seeding`.

Measures, per sample, on the default 32x32 synthetic pipeline:
- the reseed alone (this template's in-place Philox repositioning) and the naive construction
  (SeedSequence + new generators + Compose.set_random_state per sample), for comparison;
- data loading per sample (dataset __getitem__: read, augment, to tensor) with and without reseed,
  and the share of loading time that the reseed costs.
Interleaved repetitions, medians reported (machines are noisy). Targets: <= 15 us and <= 5 %.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from data.loaders import SeededAugmentedDataset
from data.synthetic import build_synthetic
from engine.config import DataConfig
from seeding import SampleKey, SampleRandomness, WorkerSeeder, data_parallel


def per_call_us(function: Callable[[int], object], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        function(index)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    arguments = parser.parse_args()

    plan = data_parallel(42, 0)
    splits = build_synthetic(DataConfig(synthetic={"train_size": arguments.samples, "val_size": 8}))
    randomness = SampleRandomness(plan.augment_key())
    dataset = SeededAugmentedDataset(
        splits.train, splits.train_transform, randomness, WorkerSeeder(plan)
    )
    transform = splits.train_transform

    def unseeded_item(index: int) -> object:
        image, label = splits.train[index]
        return transform(image=image)["image"], label

    def seeded_item(index: int) -> object:
        return dataset[SampleKey(index, 1)]

    def reseed_only(index: int) -> None:
        randomness.reseed(1, index)

    key = plan.augment_key()

    def naive_reseed(index: int) -> None:
        sequence = np.random.SeedSequence(entropy=[key[0], key[1]], spawn_key=(1, index))
        generator = np.random.Generator(np.random.PCG64(sequence))
        transform.set_random_state(generator, random.Random(int(sequence.generate_state(1)[0])))

    cases = {
        "reseed": reseed_only,
        "naive_reseed": naive_reseed,
        "load_unseeded": unseeded_item,
        "load_seeded": seeded_item,
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(arguments.repeats):
        for name, function in cases.items():
            timings[name].append(per_call_us(function, arguments.samples))
        randomness.reseed(0, 0)
        transform.set_random_state(randomness.numpy, randomness.python)  # undo the naive rebinding
    median = {name: statistics.median(values) for name, values in timings.items()}
    result = {
        "reseed_us": median["reseed"],
        "naive_reseed_us": median["naive_reseed"],
        "load_unseeded_us": median["load_unseeded"],
        "load_seeded_us": median["load_seeded"],
        "reseed_share_of_loading": median["reseed"] / median["load_seeded"],
        "seeded_vs_unseeded_overhead": median["load_seeded"] / median["load_unseeded"] - 1,
    }
    print(
        f"per-sample reseed (in-place Philox):  {result['reseed_us']:6.2f} us   (target <= 15 us)"
    )
    print(f"naive reseed (SeedSequence + new gens): {result['naive_reseed_us']:6.2f} us")
    print(f"loading a sample, unseeded:           {result['load_unseeded_us']:6.1f} us")
    print(f"loading a sample, seeded:             {result['load_seeded_us']:6.1f} us")
    print(
        f"reseed share of loading time:         {100 * result['reseed_share_of_loading']:5.1f} %   (target <= 5 %)"
    )
    print(
        f"seeded vs unseeded loading (end to end, noisy): {100 * result['seeded_vs_unseeded_overhead']:+5.1f} %"
    )
    if arguments.json:
        with open(arguments.json, "w") as stream:
            json.dump(result, stream, indent=2)


if __name__ == "__main__":
    main()
