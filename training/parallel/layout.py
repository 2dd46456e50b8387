"""Where a parallel layout keeps the training state across its ranks, and so what a checkpoint
of it holds: each mode owns one `StateLayout`, and the trainer and the checkpoint owner ask it
instead of guessing from the parameters or reading the config.

- `split_parameters`: the parameters are DTensors (FSDP2, tensor parallelism). A whole
  checkpoint gathers them (a collective), and a whole checkpoint's tensors are cut like them on
  load; otherwise every rank holds whole tensors and nothing moves.
- `per_rank_files`: every rank writes its own part of each checkpoint, a directory
  (runtime/checkpoint/directory.py), instead of rank 0 writing one file. FSDP2 does; so do the
  single-process and world-size-invariant modes asked for `parallel.shard`, so that such a run
  writes the same format at any world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer

from training.parallel.dtensor import gathered, optimizer_state_sharded_like, sharded_like


@dataclass(frozen=True)
class StateLayout:
    split_parameters: bool = False
    per_rank_files: bool = False

    def whole(self, state: Any) -> Any:
        """`state` with every split tensor gathered whole (collective where split)."""
        return gathered(state) if self.split_parameters else state

    def model_state_like(self, model: nn.Module, whole: dict[str, Any]) -> dict[str, Any]:
        """A whole model state, each tensor cut like `model`'s own (no communication)."""
        return sharded_like(model.state_dict(), whole) if self.split_parameters else whole

    def optimizer_state_like(self, optimizer: Optimizer, whole: dict[str, Any]) -> dict[str, Any]:
        """A whole optimizer state, each parameter's state cut like that parameter."""
        return optimizer_state_sharded_like(optimizer, whole) if self.split_parameters else whole
