"""Sharded checkpoints: one directory per checkpoint, each rank writes the shards it holds
(torch.distributed.checkpoint, "DCP"), any layout reads them back, and nothing is unpickled.

    checkpoints/step-00000004/   .metadata      DCP's index: which key, which slice, which file
                                 __0_0.distcp   rank 0's shards (one file per rank)
                                 __1_0.distcp   rank 1's
                                 state.pt       everything else: positions, RNG states, the
                                                fingerprint, the optimizer's hyperparameters
                                 SHA256SUMS     every file's checksum, written last
    checkpoints/last -> step-00000004

Why a directory that appears at once: the ranks write into `.step-00000004.tmp/`; once DCP has
finished (its index is written after every rank's shards), rank 0 adds state.pt and SHA256SUMS and
renames the directory into place. A writer killed at any point leaves a `.tmp` directory, which
`--resume auto` never looks at and the next run removes; a `step-*` directory whose files do not
match its SHA256SUMS is skipped as damaged, as a single-file checkpoint without its checksum is.

Why each rank hashes its own file: the checksums cost one read of what a rank just wrote, and no
rank reads the whole checkpoint back at save time.

DCP itself, and reading its index without unpickling, live in runtime/checkpoint/dcp.py, imported on
first use (importing DCP costs every process about 1.5 s).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from foundation.errors import UserError
from runtime.atomic import atomic_write, atomic_write_text, fsync_directory
from runtime.checkpoint.pickle_depth import torch_file_problem
from runtime.plain_files import is_regular_file, open_for_reading

STATE = "state.pt"
SUMS = "SHA256SUMS"
INDEX = ".metadata"  # DCP's own name for its index, which runtime/checkpoint/dcp.py reads
_MAX_SUMS = 1 << 20  # SHA256SUMS of a checkpoint with thousands of shard files fits many times


# ----------------------------------------------------------------------------- checksums
def file_sha256(path: Path) -> str:
    """The sha256 of a regular file (a link or a FIFO is refused, not followed or waited on)."""
    digest = hashlib.sha256()
    with open_for_reading(path) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listed_files(directory: Path) -> dict[str, str]:
    """SHA256SUMS of a checkpoint directory: {file name: sha256}. Each name must be a bare file
    name (no separator, not `.` or `..`); what the checkpoint reads is this list and nothing
    else (runtime/checkpoint/dcp.py holds DCP's index to it). One line for anything else."""
    sums = directory / SUMS
    if not is_regular_file(sums):
        raise UserError(f"checkpoint {directory} is incomplete: {SUMS} is missing")
    listed = {}
    with open_for_reading(sums) as stream:
        text = stream.read(_MAX_SUMS).decode("utf-8", errors="replace")
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if "/" in name or os.sep in name or name in ("", ".", "..") or "\0" in name:
            raise UserError(f"checkpoint {directory}: {SUMS} names {name[:80]!r}, not a file in it")
        listed[name] = digest
    return listed


def damage(directory: Path) -> str | None:
    """What is wrong with a checkpoint directory's files (None: every file matches SHA256SUMS,
    and the index and state.pt are among them, each a regular file, not a link)."""
    if directory.is_symlink():
        return "it is a symbolic link"
    try:
        listed = listed_files(directory)
    except UserError as error:
        return str(error).rpartition(": ")[2]
    for needed in (INDEX, STATE):
        if needed not in listed:
            return f"{SUMS} does not list {needed}"
    for name, digest in sorted(listed.items()):
        path = directory / name
        if not is_regular_file(path):
            return f"{name} is missing or not a regular file"
        if file_sha256(path) != digest:
            return f"{name} does not match its sha256 in {SUMS}"
    return None


# ----------------------------------------------------------------------------- writing
def write_directory(
    final: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any], *, is_main: bool
) -> None:
    """Collective: every rank writes its shards of `tensors`; rank 0 writes `state` (plain values
    and small tensors, read back with weights_only), the checksums, and publishes `final`."""
    from runtime.checkpoint.dcp import save_shards

    staging = final.with_name(f".{final.name}.tmp")
    save_shards(staging, tensors, alone=not dist.is_initialized())
    rank = dist.get_rank() if dist.is_initialized() else 0
    mine = {path.name: file_sha256(path) for path in sorted(staging.glob(f"__{rank}_*.distcp"))}
    everyone = [mine]
    if dist.is_initialized() and dist.get_world_size() > 1:
        everyone = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(everyone, mine)
    if not is_main:
        return
    atomic_write(staging / STATE, lambda stream: torch.save(state, stream), binary=True)
    sums = {name: digest for part in everyone for name, digest in part.items()}
    sums |= {INDEX: file_sha256(staging / INDEX), STATE: file_sha256(staging / STATE)}
    atomic_write_text(
        staging / SUMS, "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    )
    fsync_directory(staging)
    if final.exists():  # a damaged checkpoint of this step, skipped by the resume: replaced
        shutil.rmtree(final)
    os.rename(staging, final)
    fsync_directory(final.parent)


# ----------------------------------------------------------------------------- reading
class StoredShards:
    """The tensors of a sharded checkpoint, left on disk until the reader says where they go:
    each rank then reads only the slices its own tensors (plain or DTensor) cover."""

    def __init__(self, directory: Path) -> None:
        from runtime.checkpoint.dcp import tensor_shapes

        self.directory = directory
        self.listed = frozenset(listed_files(directory))
        self._shapes = tensor_shapes(directory, self.listed)

    def shapes(self) -> dict[str, tuple[torch.Size, torch.dtype]]:
        return dict(self._shapes)

    def read(self, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fill `targets` (collective when a process group is up: every rank calls it with its
        own tensors); a key the checkpoint lacks, or holds with another shape, is one line."""
        shapes = self.shapes()
        for key, target in targets.items():
            if key not in shapes:
                raise UserError(f"cannot load checkpoint {self.directory}: it has no {key}")
            if tuple(shapes[key][0]) != tuple(target.shape):
                raise UserError(
                    f"cannot load checkpoint {self.directory}: {key} has shape "
                    f"{tuple(shapes[key][0])}, this run's has {tuple(target.shape)}"
                )
        return self._load(targets, alone=not dist.is_initialized())

    def read_whole(self) -> dict[str, torch.Tensor]:
        """Every tensor whole, in this process alone (tools, verify, evaluate)."""
        targets = {
            key: torch.empty(size, dtype=dtype) for key, (size, dtype) in self.shapes().items()
        }
        return self._load(targets, alone=True)

    def _load(self, targets: dict[str, torch.Tensor], alone: bool) -> dict[str, torch.Tensor]:
        from runtime.checkpoint.dcp import load_shards

        load_shards(self.directory, self.listed, targets, alone=alone)
        return targets


def read_state(directory: Path) -> Any:
    with open_for_reading(directory / STATE) as stream:
        problem = torch_file_problem(stream)
        if problem is not None:
            raise UserError(f"cannot load checkpoint {directory}: {STATE}: {problem}")
        return torch.load(stream, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- the state's split
def split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trainer's state as (the tensors that are sharded or large: the model's and the
    optimizer's per-parameter state, by flat key `model.<name>`, `optimizer.<index>.<name>`;
    everything else, for state.pt)."""
    tensors = {f"model.{name}": value for name, value in state["model"].items()}
    rest_of_optimizer: dict[Any, dict[str, Any]] = {}
    for index, values in state["optimizer"]["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                rest_of_optimizer.setdefault(index, {})[name] = value
    optimizer = {**state["optimizer"], "state": rest_of_optimizer}
    rest = {key: value for key, value in state.items() if key != "model"}
    return tensors, {**rest, "optimizer": optimizer}


def join_state(rest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`split_state`'s inverse."""
    model = {
        key[len("model.") :]: value for key, value in tensors.items() if key.startswith("model.")
    }
    optimizer_state: dict[Any, dict[str, Any]] = {
        index: dict(values) for index, values in rest["optimizer"]["state"].items()
    }
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            index, name = key[len("optimizer.") :].split(".", 1)
            optimizer_state.setdefault(int(index), {})[name] = value
    ordered = {index: optimizer_state[index] for index in sorted(optimizer_state)}
    return {**rest, "model": model, "optimizer": {**rest["optimizer"], "state": ordered}}


class DirectoryTensors:
    """training/events.py's `StoredTensors` for a sharded checkpoint: the model and optimizer
    tensors are read straight into this run's layout (DTensor shards under FSDP2, whole tensors
    under DDP), so no rank ever holds more of them than it trains with."""

    def __init__(self, directory: Path, rest: dict[str, Any]) -> None:
        self.shards = StoredShards(directory)
        self.rest = rest

    def read_for(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(the model's state dict, the optimizer's), each tensor shaped like this run's."""
        shapes = self.shards.shapes()
        targets = {f"model.{name}": value for name, value in model.state_dict().items()}
        unknown = sorted(k for k in shapes if k.startswith("model.") and k not in targets)
        if unknown:
            raise UserError(
                f"cannot load checkpoint {self.shards.directory}: this model has no "
                f"{unknown[0][len('model.') :]}"
            )
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for key, (size, dtype) in shapes.items():
            if not key.startswith("optimizer."):
                continue
            index = int(key.split(".")[1])
            if index >= len(parameters):
                raise UserError(
                    f"cannot load checkpoint {self.shards.directory}: {key} belongs to no "
                    "parameter of this optimizer"
                )
            parameter = parameters[index].detach()
            # A parameter-shaped state (momentum, moments) is laid out like its parameter.
            like_parameter = tuple(size) == tuple(parameter.shape)
            targets[key] = (
                torch.empty_like(parameter, dtype=dtype)
                if like_parameter
                else torch.empty(size, dtype=dtype)
            )
        state = join_state(self.rest, self.shards.read(targets))
        return state["model"], state["optimizer"]
