"""The global RNGs of the training process (python, numpy, torch CPU and CUDA), in the order
train.py enters them.

Why two torch phases: model initialisation must be identical on every replica (`init`), while the
forward pass (dropout) must differ per replica (`dropout`). `torch.manual_seed` also seeds every
CUDA device, so one call covers CPU and GPU.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from seeding.derive import numpy_legacy_seed
from seeding.plan import SeedPlan
from seeding.regions import enter_sharded_stream


def seed_host_globals(plan: SeedPlan) -> None:
    """python `random` and numpy's global RNG of the training process (per replica)."""
    seed = plan.seed("host")
    random.seed(seed)
    np.random.seed(numpy_legacy_seed(seed))


def enter_init_stream(plan: SeedPlan) -> None:
    """Call right before building the model: weights come out the same on every replica."""
    torch.manual_seed(plan.seed("init"))


def enter_dropout_stream(plan: SeedPlan) -> None:
    """Call after the model is built: dropout and other forward-pass randomness per replica,
    and the stream of tensor-parallel sharded regions (seeding/regions.py)."""
    torch.manual_seed(plan.seed("dropout"))
    enter_sharded_stream(plan)
