"""The fields every checkpoint of this template holds beside its tensors, at neutral values:
for unit tests that write a checkpoint by hand (runtime/checkpoint/owner.py checks them on load)."""

from __future__ import annotations

from typing import Any


def checkpoint_fields(step: int) -> dict[str, Any]:
    return {
        "config": {},
        "fingerprint": {},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "epoch_totals": [],
        "rng": [],
        "step": step,
        "epoch": 0,
        "batch_in_epoch": 0,
        "schedule_horizon": 0,
    }
