"""`data.subset=N`: a fixed, seeded subset of N training samples spread over the whole dataset.

Why not the first N: ImageFolder lists its samples class by class, so the first 512 digits were
classes 0-3 only, and a run "on a subset" learnt four of ten classes (val_acc 0.333) without a
word. Here the subset is stratified by class where the dataset knows its labels without reading
an image (`class_labels()`: ImageFolder from its folder names, the in-memory datasets from their
arrays): each class keeps its share, rounded by largest remainder, at least one sample each when
N allows. Otherwise it is a uniform draw. Either way it comes from the seed plan's `subset`
stream (the same on every rank, whatever the world size), is sorted, and is recorded in the
manifest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset


def class_labels(dataset: Dataset) -> Sequence[int] | None:
    """The dataset's labels in index order, if it can say them without reading samples."""
    method = getattr(dataset, "class_labels", None)
    return [int(label) for label in method()] if callable(method) else None


def seeded_subset(dataset: Dataset, size: int, seed: int) -> tuple[Subset, dict[str, Any]]:
    """`size` samples of `dataset` chosen with `seed`; the subset and its description."""
    total = len(dataset)  # type: ignore[arg-type]
    size = min(size, total)
    generator = torch.Generator().manual_seed(seed)
    labels = class_labels(dataset)
    if labels is None:
        chosen = torch.randperm(total, generator=generator)[:size].tolist()
        description: dict[str, Any] = {"stratified": False}
    else:
        by_class: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_class[label].append(index)
        quotas = _quotas({label: len(members) for label, members in by_class.items()}, size)
        chosen = []
        for label in sorted(by_class):
            members = by_class[label]
            order = torch.randperm(len(members), generator=generator)[: quotas[label]].tolist()
            chosen += [members[position] for position in order]
        description = {"stratified": True, "per_class": {str(k): quotas[k] for k in sorted(quotas)}}
    indices = sorted(chosen)
    return Subset(dataset, indices), {"size": size, "of": total, "seed": seed, **description}


def _quotas(counts: dict[int, int], size: int) -> dict[int, int]:
    """Each class's share of `size`, by largest remainder; at least one each if size allows."""
    total = sum(counts.values())
    exact = {label: size * count / total for label, count in counts.items()}
    quotas = {label: int(share) for label, share in exact.items()}
    if size >= len(counts):
        for label in counts:
            quotas[label] = max(quotas[label], 1)
    by_remainder = sorted(counts, key=lambda label: (quotas[label] - exact[label], label))
    while sum(quotas.values()) < size:
        label = next(lab for lab in by_remainder if quotas[lab] < counts[lab])
        quotas[label] += 1
        by_remainder.remove(label)
        by_remainder.append(label)
    while sum(quotas.values()) > size:  # the minimum of one each overshot: take from the largest
        label = max(quotas, key=lambda lab: (quotas[lab], -lab))
        quotas[label] -= 1
    return quotas
