"""torch.distributed.checkpoint ("DCP") behind the sharded layout: its shards written and read,
its index read without unpickling anything it names.

Why our own reader: DCP's FileSystemReader reads the index with `pickle.load`, and its default
load planner reads non-tensor entries with `torch.load(weights_only=False)`; either would run code
planted in a checkpoint, which this template's checkpoints never do. Here the index is read as
data (runtime/checkpoint/dcp_index.py), every file it names must be listed in the checkpoint's SHA256SUMS
(DCP would open `directory / name` for any name, `../` and absolute paths included), and a
non-tensor entry is refused (this writer never makes one: such values go to state.pt, read with
`weights_only=True`). DCP itself reads the shards with `weights_only=True`.

Why a module of its own: importing DCP costs about 1.5 s of CPU (it pulls in FSDP and dynamo),
paid by every rank of every run that imported it; runtime/checkpoint/directory.py imports this
module only when a sharded checkpoint is written or read.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.filesystem import _metadata_fn as INDEX
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)

from foundation.errors import UserError, first_line
from runtime.checkpoint.dcp_index import IndexRefused, files_named, load_index
from runtime.checkpoint.pickle_depth import MAX_DEPTH, pickle_depth
from runtime.plain_files import open_for_reading


def read_index(directory: Path, listed: Collection[str]) -> Metadata:
    """DCP's index of a sharded checkpoint, read as data (runtime/checkpoint/dcp_index.py); every file it
    names must be one of `listed` (the checkpoint's SHA256SUMS), so no read leaves the
    directory or touches a file the checksums do not cover."""
    try:
        with open_for_reading(directory / INDEX) as stream:
            data = stream.read()
        if pickle_depth(data) > MAX_DEPTH:
            raise IndexRefused(f"it nests deeper than {MAX_DEPTH} levels")
        index = load_index(io.BytesIO(data))
    except Exception as error:  # a torn or crafted file: any exception of the unpickler's
        raise UserError(
            f"cannot load checkpoint {directory}: its index {INDEX} is refused "
            f"({first_line(str(error) or type(error).__name__)[:160]})"
        ) from None
    unlisted = sorted(name for name in files_named(index) if name not in listed)
    if unlisted:
        raise UserError(
            f"cannot load checkpoint {directory}: its index names {unlisted[0][:80]!r}, which "
            "is not a file of the checkpoint listed in its SHA256SUMS"
        )
    try:
        sizes = {name: (directory / name).lstat().st_size for name in files_named(index)}
    except OSError as error:
        raise UserError(f"cannot load checkpoint {directory}: {first_line(error)[:160]}") from None
    outside = next(
        (
            where.fqn
            for where, stored in index.storage_data.items()
            if stored.offset + stored.length > sizes[stored.relative_path]
        ),
        None,
    )
    if outside is not None:
        raise UserError(
            f"cannot load checkpoint {directory}: its index places {outside[:80]} beyond the end "
            "of its file"
        )
    pickled = sorted(
        key
        for key, entry in index.state_dict_metadata.items()
        if isinstance(entry, BytesStorageMetadata)
    )
    if pickled:
        raise UserError(
            f"cannot load checkpoint {directory}: it holds pickled objects ({pickled[0][:80]}), "
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
    def __init__(self, directory: Path, listed: Collection[str]) -> None:
        super().__init__(directory)
        self.listed = listed

    def read_metadata(self) -> Metadata:
        index = read_index(Path(self.path), self.listed)
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


def tensor_shapes(
    directory: Path, listed: Collection[str]
) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Every tensor a sharded checkpoint holds: (its whole shape, its dtype), by key."""
    return {
        key: (entry.size, entry.properties.dtype)
        for key, entry in read_index(directory, listed).state_dict_metadata.items()
        if isinstance(entry, TensorStorageMetadata)
    }


def load_shards(
    directory: Path, listed: Collection[str], targets: dict[str, torch.Tensor], *, alone: bool
) -> None:
    """Collective unless `alone`: fill `targets` (plain tensors or DTensor shards) in place."""
    try:
        with _quiet():
            dcp.load(
                targets,
                storage_reader=_SafeReader(directory, listed),
                planner=_TensorsOnlyPlanner(),
                no_dist=alone,
            )
    except UserError:
        raise
    except BaseException as error:  # DCP wraps every read error in CheckpointException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise UserError(
            f"cannot load checkpoint {directory}: its shards do not read back as its index says "
            f"({type(error).__name__}: {first_line(error)[:160]})"
        ) from None
