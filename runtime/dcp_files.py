"""torch.distributed.checkpoint ("DCP") behind the sharded layout: its shards written and read,
its index read without unpickling anything it names.

Why our own reader: DCP's FileSystemReader reads the index with `pickle.load`, and its default
load planner reads non-tensor entries with `torch.load(weights_only=False)`; either would run code
planted in a checkpoint, which this template's checkpoints never do. Here the index is read by an
unpickler that knows DCP's metadata classes and nothing else, and a non-tensor entry is refused
(this writer never makes one: such values go to state.pt, read with `weights_only=True`). DCP
itself reads the shards with `weights_only=True`.

Why a module of its own: importing DCP costs about 1.5 s of CPU (it pulls in FSDP and dynamo),
paid by every rank of every run that imported it; runtime/sharded_checkpoint.py imports this
module only when a sharded checkpoint is written or read.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.filesystem import _metadata_fn as INDEX
from torch.distributed.checkpoint.metadata import (
    _MEM_FORMAT_ENCODING,
    BytesStorageMetadata,
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)

from foundation.errors import UserError, first_line

_INDEX_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("collections", "OrderedDict"),
}


class _IndexUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves DCP's metadata classes, torch.Size and dtypes only: a
    crafted index naming any other callable (os.system, builtins.eval) stops here, before it
    is called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INDEX_CLASSES:
            return super().find_class(module, name)
        if (module, name) == ("builtins", "getattr"):  # an Enum member, pickled by name
            return _member_of_an_index_enum
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")


def _member_of_an_index_enum(owner: Any, name: str) -> Any:
    """`getattr(EnumClass, name)`, which is how some Python builds (the image's 3.11.7) pickle an
    Enum member: resolved for DCP's own Enum only."""
    if owner is not _MEM_FORMAT_ENCODING:
        raise pickle.UnpicklingError(f"getattr on {owner!r} is not part of a checkpoint index")
    return owner[name]


def read_index(directory: Path) -> Metadata:
    """DCP's index of a sharded checkpoint, read without running anything it names."""
    try:
        with (directory / INDEX).open("rb") as stream:
            index = _IndexUnpickler(stream).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise UserError(
            f"cannot load checkpoint {directory}: its index {INDEX} is refused "
            f"({first_line(error)[:160]})"
        ) from None
    if not isinstance(index, Metadata):
        raise UserError(f"cannot load checkpoint {directory}: {INDEX} is not a DCP index")
    pickled = sorted(
        key
        for key, entry in index.state_dict_metadata.items()
        if isinstance(entry, BytesStorageMetadata)
    )
    if pickled:
        raise UserError(
            f"cannot load checkpoint {directory}: it holds pickled objects ({pickled[0]}), "
            "which this template never writes and never unpickles"
        )
    return index


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DCP warns on every save of its own use of TypedStorage, and on every use in one process
    ("assuming the intent is to ... in a single process"): both are noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


class _SafeReader(FileSystemReader):
    def read_metadata(self) -> Metadata:
        index = read_index(Path(self.path))
        if getattr(index, "storage_meta", None) is None:
            index.storage_meta = StorageMeta()
        index.storage_meta.load_id = self.load_id
        return index


class _TensorsOnlyPlanner(DefaultLoadPlanner):
    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise UserError(f"refusing to unpickle checkpoint entry {read_item.dest_index.fqn}")


def save_shards(staging: Path, tensors: dict[str, torch.Tensor], *, alone: bool) -> None:
    """Collective unless `alone`: every rank writes the shards of `tensors` it holds into
    `staging` (one file per rank), and DCP's index after all of them."""
    with _quiet():
        dcp.save(
            tensors,
            storage_writer=FileSystemWriter(staging, single_file_per_rank=True, thread_count=1),
            # A tensor every rank holds whole (a BatchNorm buffer) is written from rank 0, as a
            # single-file checkpoint holds rank 0's; DCP would pick the least-loaded rank.
            planner=DefaultSavePlanner(dedup_save_to_lowest_rank=True),
            no_dist=alone,
        )


def tensor_shapes(directory: Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Every tensor a sharded checkpoint holds: (its whole shape, its dtype), by key."""
    return {
        key: (entry.size, entry.properties.dtype)
        for key, entry in read_index(directory).state_dict_metadata.items()
        if isinstance(entry, TensorStorageMetadata)
    }


def load_shards(directory: Path, targets: dict[str, torch.Tensor], *, alone: bool) -> None:
    """Collective unless `alone`: fill `targets` (plain tensors or DTensor shards) in place."""
    with _quiet():
        dcp.load(
            targets,
            storage_reader=_SafeReader(directory),
            planner=_TensorsOnlyPlanner(),
            no_dist=alone,
        )
