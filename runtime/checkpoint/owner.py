"""The checkpoint owner: when to save, what goes in, the atomic write, keep-last-k, finding and
loading the one to resume from, the computation fingerprint, and the refusal to save a broken
state.

Why one owner: these decisions used to be spread over the trainer, the recorder, train.py and
three helper modules; a change of policy (say, saving every N minutes) now touches one class,
which knows the trainer only through the `state_dict` protocol (training/events.py).

Why this file format:
- A killed writer must never leave a `last.pt` that cannot be loaded: each checkpoint is written
  to a temporary file in the same directory, flushed, fsynced and renamed into place; only then is
  its checksum file written and `last.pt` re-pointed (a hard link, renamed over the old one).
- A checkpoint without a matching `.sha256` file is incomplete (the writer died between the two
  renames) or damaged, and `--resume auto` falls back to the newest complete one.
- `weights_only=True` refuses arbitrary pickles, so the payload holds only tensors and plain values.

A sharded run (`parallel.shard`) writes a directory per checkpoint instead, every rank its own
shards, under the same rules (runtime/checkpoint/directory.py); both kinds are found, pruned,
resumed from and loaded here, and each loads into either kind of run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import Field

from foundation.errors import UserError
from foundation.faults import NonFiniteState
from foundation.section import RUNTIME, Section
from runtime.checkpoint.files import (
    newest_complete,
    remove_stale_temporaries,
    save_checkpoint,
    save_checkpoint_directory,
    set_aside,
)
from runtime.checkpoint.fingerprint import first_difference
from runtime.checkpoint.resume import ResumePoint
from runtime.rundir import RunDirectory
from training.events import Position
from training.health import first_non_finite
from training.parallel.layout import StateLayout
from training.topology import local_tensor


class CheckpointConfig(Section):
    """The `checkpoint` section: when checkpoints are written and how many are kept."""

    every_steps: int | None = Field(
        None,
        ge=1,
        description="also checkpoint every N steps (null = at epoch ends and at the stop only)",
        json_schema_extra=RUNTIME,
    )
    keep: int = Field(3, ge=1, description="numbered checkpoints kept", json_schema_extra=RUNTIME)


class Checkpointer:
    """Checkpoints of one run directory. Every rank holds one; only the writer (rank 0) writes,
    but where the mode's state layout writes per rank (`per_rank_files`: a checkpoint
    directory), every rank writes its own part."""

    def __init__(
        self, run_dir: RunDirectory, config: CheckpointConfig, layout: StateLayout | None = None
    ) -> None:
        layout = layout or StateLayout()
        self.run_dir = run_dir
        self.layout = layout
        self.per_rank = layout.per_rank_files
        self.directory = run_dir.checkpoint_dir
        self.every_steps = config.every_steps
        self.keep = config.keep
        self.fingerprint: dict[str, Any] = {}
        self.provenance: dict[str, Any] = {}
        self.saved_step = -1
        self.skipped: list[Path] = []

    # ----------------------------------------------------------------- before the run
    def expect(
        self,
        fingerprint: dict[str, Any],
        resume: ResumePoint,
        defaults: dict[str, Any] | None = None,
        world_size_may_change: bool = False,
    ) -> list[str]:
        """What every checkpoint of this run must match; a resumed checkpoint of another
        computation is refused here, before anything is written (`defaults`: see
        `first_difference`). Returns the notes of what continues differently.

        `world_size_may_change`: the global batch is fixed (`data.global_batch_size`), so a
        step trains on the same samples at any world size: a checkpoint of another world size
        continues, not bit for bit (per-rank BatchNorm batches, dropout streams and the order
        of the gradient sums change; the world-size-invariant mode continues bit for bit)."""
        self.fingerprint = fingerprint
        self.skipped = resume.skipped
        if resume.checkpoint is None:
            return []
        saved = resume.checkpoint["fingerprint"]
        notes = []
        if world_size_may_change and saved.get("world_size") != fingerprint["world_size"]:
            notes.append(
                f"world size: {saved.get('world_size')} -> {fingerprint['world_size']} "
                "(continues with the same global batch, not bit for bit: each rank's "
                "BatchNorm batch and dropout stream change, and the gradients are added in "
                "another order)"
            )
            saved = {**saved, "world_size": fingerprint["world_size"]}
        difference = first_difference(saved, fingerprint, defaults)
        if difference is not None:
            hint = ""
            if difference.startswith("world_size"):
                hint = (
                    " (a run with data.global_batch_size continues on another world size; "
                    "trainer.world_size_invariant=true continues bit for bit)"
                )
            raise UserError(
                f"cannot resume: {difference}{hint}; only stopping criteria and loader settings "
                "may change"
            )
        self.saved_step = resume.checkpoint["step"]
        return notes

    # ----------------------------------------------------------------- policy
    def due(self, position: Position, epoch_ends: bool) -> bool:
        """Inside an epoch, every `checkpoint.every_steps` (epoch ends save anyway)."""
        every = self.every_steps
        return bool(every) and position.step % every == 0 and not epoch_ends

    def saved_at(self, step: int) -> bool:
        return self.saved_step == step

    # ----------------------------------------------------------------- writing (rank 0)
    def path_of(self, step: int) -> Path:
        return self.directory / (f"step-{step:08d}" if self.per_rank else f"step-{step:08d}.pt")

    def save(self, position: Position, state: dict[str, Any], write: bool) -> None:
        """Every rank records the save; the writer (rank 0) writes the state of `position`
        atomically, points last.pt at it and keeps the newest k.

        Refused, with nothing written, when the model or the optimizer state holds a NaN or an
        inf: the non-finite watch should have stopped the run before, and a broken checkpoint
        would be what `--resume auto` picks up."""
        self.saved_step = position.step
        if self.per_rank:  # every rank checks and writes its own part
            broken = _first_anywhere(first_non_finite(_named_state(state)))
        elif not write:
            return
        else:
            broken = first_non_finite(_named_state(state))
        if broken is not None:
            raise NonFiniteState(
                f"refusing to save the checkpoint of step {position.step}: {broken} is not "
                f"finite; nothing from step {position.step} on was saved"
            )
        payload = {**state, "fingerprint": self.fingerprint, **self.provenance}
        if self.per_rank:
            save_checkpoint_directory(
                self.directory, position.step, payload, self.keep, is_main=write
            )
        else:
            save_checkpoint(self.directory, position.step, payload, self.keep)

    def newest(self) -> Path | None:
        """The newest complete checkpoint on disk, for the line that says where to resume."""
        return newest_complete(self.directory)[0]

    def open_for_writing(self, provenance: dict[str, Any]) -> None:
        """On the writer, before the first save: what every checkpoint records beside the state
        (seeds, resolved config, versions), and the temporary files a killed writer left."""
        self.provenance = provenance
        for stale in remove_stale_temporaries(self.directory):
            print(f"removed an unfinished checkpoint write: {stale.name}")
        for moved in set_aside(self.directory, self.skipped):
            print(f"moved a damaged checkpoint aside: {moved}")


def _named_state(state: dict[str, Any]) -> list[tuple[str, Any]]:
    """The model and optimizer tensors by name; of a split tensor, this rank's shard."""
    named = [(f"model.{name}", tensor) for name, tensor in state["model"].items()]
    for index, values in state["optimizer"]["state"].items():
        named += [(f"optimizer.state.{index}.{key}", value) for key, value in values.items()]
    return [
        (name, local_tensor(value) if torch.is_tensor(value) else value) for name, value in named
    ]


def _first_anywhere(broken: str | None) -> str | None:
    """The first rank's finding, on every rank: they refuse the save together or write it."""
    if not dist.is_initialized():
        return broken
    found: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(found, broken)
    return next((name for name in found if name is not None), None)
