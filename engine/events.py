"""What the training loop tells the outside world, and what it needs from its data.

Why protocols: the trainer must not know who records it (metrics files, TensorBoard, a progress
line, checkpoints on disk) nor where its batches come from. It reports plain values through
`TrainingEvents`; `engine.recorder.RunRecorder` is the implementation train.py uses, and a test
can pass any other. It iterates data only through `EpochLoader`, which is what
`data.loaders.SeededLoader` is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class Position:
    """Where training stands: with per-sample seeds and a sampler that starts at an offset, this
    plus every rank's RNG state is all it takes to continue exactly, mid-epoch included."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0


class EpochLoader(Protocol):
    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch` for this rank, skipping the first `start_batch`."""
        ...

    def batches_per_epoch(self) -> int: ...


class TrainingEvents(Protocol):
    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        """After every optimizer step; `samples` is this step's sample count over all ranks.
        Called on the hot path: implementations must not synchronise with the device."""
        ...

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        """Every `trainer.log_every_steps` steps, on every rank."""
        ...

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        """At the end of each epoch, with the metrics reduced over all ranks."""
        ...

    def checkpoint_due(self, position: Position, state: dict[str, Any]) -> None:
        """The trainer's `state_dict()` (every rank's part gathered, on every rank)."""
        ...
