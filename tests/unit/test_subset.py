"""data.subset: a seeded draw spread over the dataset (data/subset.py), not its first N."""

from __future__ import annotations

import numpy as np

from data.subset import seeded_subset
from data.synthetic import ArrayImageDataset


def class_sorted(per_class: list[int]) -> ArrayImageDataset:
    labels = np.concatenate([np.full(n, label) for label, n in enumerate(per_class)])
    return ArrayImageDataset(np.zeros((len(labels), 2, 2, 3), np.uint8), labels)


def test_a_subset_of_a_class_sorted_dataset_keeps_every_class_in_its_share() -> None:
    dataset = class_sorted([50, 30, 20])
    subset, description = seeded_subset(dataset, 10, seed=7)
    labels = [dataset.labels[i] for i in subset.indices]
    assert sorted(set(labels)) == [0, 1, 2] and description["per_class"] == {"0": 5, "1": 3, "2": 2}
    assert subset.indices == sorted(subset.indices) and len(set(subset.indices)) == 10


def test_the_draw_is_a_function_of_the_seed() -> None:
    dataset = class_sorted([40, 40])
    first, _ = seeded_subset(dataset, 8, seed=1)
    again, _ = seeded_subset(dataset, 8, seed=1)
    other, _ = seeded_subset(dataset, 8, seed=2)
    assert first.indices == again.indices != other.indices


def test_without_labels_the_draw_is_uniform_over_the_whole_set() -> None:
    class Unlabelled:
        def __len__(self) -> int:
            return 1000

    subset, description = seeded_subset(Unlabelled(), 50, seed=3)  # type: ignore[arg-type]
    assert not description["stratified"] and max(subset.indices) > 500
