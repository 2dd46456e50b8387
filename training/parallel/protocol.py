"""What the trainer and the runtime know of a parallel layout: the `ParallelMode` protocol,
the step it builds (`TrainingStep`), and the batch and result types between them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from seeding import SeedPlan
from training.compile import CompileConfig, compiled
from training.determinism import Precision
from training.objective import Objective
from training.parallel.layout import StateLayout
from training.parallel.optimizer_partition import OptimizerPartition
from training.topology import Topology

Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


class StepResult(NamedTuple):
    loss: torch.Tensor  # mean loss of the step's batches (0-d, on the device)
    correct: torch.Tensor  # correct predictions (0-d, on the device)
    samples: int  # samples the sums above cover


class TrainingStep(Protocol):
    """Computes gradients and sums; the trainer applies the optimizer."""

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """Add this step's gradients to `.grad` (cleared by the trainer; through `backward`,
        which scales under a GradScaler) and return the step's loss and counts."""
        ...

    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        """This rank's [loss_sum, correct, count, seen] (float64) as the run's totals."""
        ...

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        """This rank's validation [loss_sum, correct, count] per batch, as the run's totals."""
        ...

    def totals_to_continue(
        self, rank: int, saved_world_size: int, saved_replicas: int
    ) -> list[int]:
        """Which saved ranks' running sums this rank continues from on resume (added)."""
        ...

    def restore_rng(self, states: list[Any], rank: int, step: int, saved_replicas: int) -> None:
        """Restore this rank's RNG states from the checkpoint's (one per saved rank), resuming
        at optimizer `step`."""
        ...


Backward = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class StepParts:
    """What a mode builds its training step from: the trainer's model and step settings."""

    model: nn.Module
    topology: Topology
    precision: Precision
    objective: Objective
    accumulate_steps: int = 1
    # The mode compiles its passes after wrapping or splitting the model.
    compile: CompileConfig = field(default_factory=CompileConfig)

    def slot_of(self, replica: int) -> Callable[[int], int]:
        """The MixUp/CutMix slot of batch `micro` of `replica`'s step: each accumulated batch
        of each replica has its own."""
        return lambda micro: replica * self.accumulate_steps + micro

    def compiled(
        self, module: nn.Module, layout_without_cuda_graphs: str | None = None
    ) -> nn.Module:
        """`module` as the step runs its passes through it: compiled when `trainer.compile`
        asks (training/compile.py), else itself. `layout_without_cuda_graphs`: the layout's
        name where CUDA graphs are not measured yet (reduce-overhead is refused there)."""
        return compiled(module, self.compile, self.topology.device, layout_without_cuda_graphs)


class ParallelMode(Protocol):
    """What depends on the mode outside the step itself (chosen once, in train.py)."""

    eval_chunk: int | None  # validation cut into fixed chunks of this size, or None
    state_layout: StateLayout  # where the state lives, so what a checkpoint holds
    plan: SeedPlan  # the streams this layout's ranks draw from

    def notes(self) -> list[str]:
        """Lines for the determinism report."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """The mode's layout for the manifest (None: the ordinary mode)."""
        ...

    def fingerprint_world_size(self, world_size: int) -> int | str:
        """The world size as a resumed checkpoint must match it."""
        ...

    def data_replicas(self, topology: Topology) -> tuple[int, int]:
        """(how many shards the data is split into, this rank's shard)."""
        ...

    def prepare(self, device: torch.device) -> None:
        """Process-wide settings the mode needs before anything is computed."""
        ...

    def optimizer_partition(
        self, optimizer: torch.optim.Optimizer, topology: Topology
    ) -> OptimizerPartition | None:
        """The optimizer state split over the ranks (training/parallel/optimizer_partition.py), or None:
        the optimizer updates every parameter it was given."""
        ...

    def training_step(self, parts: StepParts) -> TrainingStep: ...
