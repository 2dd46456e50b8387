"""Capture and restore every global RNG of a process as values `torch.load(weights_only=True)` accepts.

Why plain values: a checkpoint must load with `weights_only=True` (arbitrary pickles execute code),
which admits tensors, numbers, strings, lists, tuples and dicts only. numpy's state holds an
ndarray and python's a long tuple, so both are converted to tensors here and back on restore.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from seeding.regions import restore_sharded_stream_state, sharded_stream_state

RngState = dict[str, Any]


def capture_rng_state() -> RngState:
    version, mt_words, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: RngState = {
        "python": {
            "version": version,
            "words": torch.tensor(mt_words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch_cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    sharded = sharded_stream_state()
    if sharded is not None:  # tensor-parallel sharded regions (seeding/regions.py)
        state["sharded_dropout"] = sharded
    return state


def restore_rng_state(state: RngState) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch_cpu"])
    if state["cuda"]:
        if torch.cuda.device_count() < len(state["cuda"]):
            raise ValueError(
                f"the checkpoint holds RNG states of {len(state['cuda'])} CUDA devices, "
                f"this process sees {torch.cuda.device_count()}"
            )
        torch.cuda.set_rng_state_all(state["cuda"])
    if "sharded_dropout" in state:
        restore_sharded_stream_state(state["sharded_dropout"])
