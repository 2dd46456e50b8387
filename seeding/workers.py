"""Global RNGs inside DataLoader workers: python, numpy and torch, per (rank, worker, epoch).

Why: torch seeds a worker from `base_seed + worker_id`, where base_seed is drawn from the
loader's generator, so worker streams depend on how many iterators were made before; and with
`persistent_workers=True` a worker is seeded once and never again. User code that calls
`random` / `np.random` / `torch.rand` in `__getitem__` then changes with num_workers and epochs.
Here a worker's globals are seeded from the plan at (global rank, worker id, epoch): in
`worker_init_fn` when the worker starts, and again when a persistent worker sees a new epoch.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import get_worker_info

from seeding.derive import numpy_legacy_seed
from seeding.plan import SeedPlan


def seed_worker_globals(plan: SeedPlan, worker_id: int, epoch: int) -> int:
    """Seed python, numpy and torch global RNGs of the calling worker; returns the seed used."""
    seed = plan.seed("worker", worker_id, epoch)
    random.seed(seed)
    np.random.seed(numpy_legacy_seed(seed))
    torch.manual_seed(seed)
    return seed


class WorkerSeeder:
    """`worker_init_fn` plus the per-epoch reseed of persistent workers.

    Set `epoch` before each DataLoader iterator is created (the data loader in `data/` does it in
    the same call that sets the sampler's epoch); the value is copied into workers when they start.
    """

    def __init__(self, plan: SeedPlan) -> None:
        self.plan = plan
        self.epoch = 0
        self._seeded_epoch: int | None = None

    def __call__(self, worker_id: int) -> None:
        seed_worker_globals(self.plan, worker_id, self.epoch)
        self._seeded_epoch = self.epoch

    def enter_epoch(self, epoch: int) -> None:
        """Called for every sample; reseeds only in a worker that has moved on to a new epoch."""
        if epoch == self._seeded_epoch:
            return
        info = get_worker_info()
        if info is not None:
            seed_worker_globals(self.plan, info.id, epoch)
        self._seeded_epoch = epoch
