"""DCP's index of a sharded checkpoint (`.metadata`), read as data: nothing it names runs, and
nothing outside the index's own objects changes.

Why a loader of our own, and not `pickle.load` behind an allow-list: `find_class` vets only the
globals a pickle names. The BUILD opcode then calls `setattr` on whatever object is on the stack,
an allowed *class* or *function* included: sixty bytes in front of an honest index
(`GLOBAL pathlib.PosixPath`, state `(None, {"_str": X})`, BUILD) rewrite every `Path` of the
process. torch's weights-only unpickler (`torch._weights_only_unpickler`) builds only instances of
allowed types, but it reads pickle protocol 2 only, and DCP writes its index with protocol 4
(FRAME, STACK_GLOBAL): it refuses every honest index.

So the index goes through Python's own pure-Python unpickler with the opcodes that construct or
mutate objects replaced:

- a global resolves from a fixed table (DCP's metadata classes, `torch.Size`, torch's layout
  lookup, dtypes by their exact names): no module attribute is looked up by a name from the file,
  so nothing is imported by name;
- REDUCE calls only the few constructors an honest index uses, with arguments of plain types;
- NEWOBJ creates only instances of DCP's metadata dataclasses, and BUILD fills only such an
  instance, with its own declared fields and no slot state; a class or a function is never a
  BUILD target;
- persistent ids, extension codes and the old INST/OBJ opcodes are refused.

The result is then checked field by field (`_check`): every object is of the type its field
declares, every count is a non-negative integer. Every failure is one line (`IndexRefused`).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable
from pathlib import PosixPath
from typing import IO, Any, ClassVar

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    _MEM_FORMAT_ENCODING,
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

_MAX_ELEMENTS = 1 << 40  # a tensor past this cannot be allocated to be read into


class IndexRefused(Exception):
    """The index is not one this reader accepts; the message says why, in a few words."""


# Built from the module's own namespace: `getattr(torch, name)` would run torch's lazy
# `__getattr__`, which imports submodules by name.
DTYPES: dict[str, torch.dtype] = {
    name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)
}
# What a training state's tensors are (weights, buffers, optimizer state, counters): anything
# else (quantized, bit-packed, float8) is refused rather than handed to DCP's reader.
_STORED_DTYPES = {
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
}  # fmt: skip
_DATACLASSES = (
    Metadata,
    TensorStorageMetadata,
    BytesStorageMetadata,
    ChunkStorageMetadata,
    MetadataIndex,
    StorageMeta,
    _StorageInfo,
)
_MEMORY_FORMATS = {
    _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT: torch.contiguous_format,
    _MEM_FORMAT_ENCODING.TORCH_CHANNELS_LAST: torch.channels_last,
    _MEM_FORMAT_ENCODING.TORCH_PRESERVE_FORMAT: torch.preserve_format,
}


def _size(*dims: Any) -> torch.Size:
    if len(dims) != 1 or not isinstance(dims[0], (tuple, list)):
        raise IndexRefused("torch.Size takes one tuple")
    return torch.Size(_count(value, "a dimension") for value in dims[0])


def _layout(name: Any) -> torch.layout:
    if name != "torch.strided":
        raise IndexRefused(f"layout {str(name)[:40]!r} is not one this template writes")
    return torch.strided


def _path(*parts: Any) -> PosixPath:
    if not all(isinstance(part, str) for part in parts):
        raise IndexRefused("a path made of other things than strings")
    return PosixPath(*parts)


def _memory_format(value: Any) -> _MEM_FORMAT_ENCODING:
    if not isinstance(value, (int, str)):
        raise IndexRefused("a memory format that is not a plain value")
    try:
        return _MEM_FORMAT_ENCODING(value)
    except ValueError:
        raise IndexRefused(f"unknown memory format {str(value)[:40]!r}") from None


def _enum_member(owner: Any, name: Any) -> _MEM_FORMAT_ENCODING:
    """`getattr(EnumClass, name)`: how some Python builds (the image's 3.11.7) pickle an Enum
    member. Resolved for DCP's own Enum, by name, only."""
    if owner is not _MEM_FORMAT_ENCODING or name not in _MEM_FORMAT_ENCODING.__members__:
        raise IndexRefused("getattr on something other than DCP's memory-format names")
    return _MEM_FORMAT_ENCODING[name]


# The globals an index may name, and what each resolves to. Classes placed on the stack are
# only ever instantiated by NEWOBJ (checked) or called through `_CALLABLE` (checked).
_GLOBALS: dict[tuple[str, str], Any] = {
    **{("torch.distributed.checkpoint.metadata", c.__name__): c for c in _DATACLASSES},
    ("torch.distributed.checkpoint.metadata", "TensorProperties"): TensorProperties,
    ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"): _MEM_FORMAT_ENCODING,
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): _layout,
    ("pathlib", "PosixPath"): PosixPath,
    ("builtins", "getattr"): _enum_member,
    **{("torch", name): dtype for name, dtype in DTYPES.items()},
}
# What REDUCE may call, by the object the table above put on the stack.
_CALLABLE: dict[Any, Callable[..., Any]] = {
    torch.Size: _size,
    _layout: _layout,
    PosixPath: _path,
    _MEM_FORMAT_ENCODING: _memory_format,
    _enum_member: _enum_member,
}


class _IndexUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise IndexRefused(f"{module}.{name} is not part of a checkpoint index") from None

    def persistent_load(self, pid: Any) -> Any:
        raise IndexRefused("an index holds no persistent ids")

    def _reduce(self) -> None:
        args = self.stack.pop()
        function = self.stack[-1]
        call = next((vetted for known, vetted in _CALLABLE.items() if known is function), None)
        if call is None or not isinstance(args, tuple):
            raise IndexRefused(f"a call of {_name(function)} is not part of a checkpoint index")
        self.stack[-1] = call(*args)

    def _newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        allowed = any(cls is known for known in (*_DATACLASSES, TensorProperties))
        if not allowed or args != ():
            raise IndexRefused(f"creating {_name(cls)} is not part of a checkpoint index")
        self.append(cls.__new__(cls))

    def _build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        kind = type(target)  # an instance's type: a class or a function is never filled
        if kind is TensorProperties:
            _set_tensor_properties(target, state)
            return
        if not any(kind is known for known in _DATACLASSES):
            raise IndexRefused(f"filling {_name(target)} is not part of a checkpoint index")
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # (state, no slot state): how some classes pickle
        if not isinstance(state, dict):
            raise IndexRefused(f"{kind.__name__}'s state is not a mapping of its fields")
        unknown = set(state) - {field.name for field in dataclasses.fields(kind)}
        if unknown:
            raise IndexRefused(f"{kind.__name__} has no field {sorted(map(str, unknown))[0]!r}")
        target.__dict__.update(state)

    def _refuse(self) -> None:
        raise IndexRefused("an opcode that a checkpoint index never uses")

    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.NEWOBJ[0]] = _newobj
    dispatch[pickle.BUILD[0]] = _build
    for _opcode in (
        pickle.NEWOBJ_EX,
        pickle.INST,
        pickle.OBJ,
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
        pickle.PERSID,
        pickle.BINPERSID,
    ):
        dispatch[_opcode[0]] = _refuse


def _name(thing: Any) -> str:
    return getattr(thing, "__qualname__", type(thing).__name__)


def _set_tensor_properties(target: TensorProperties, state: Any) -> None:
    """TensorProperties pickles as a 5-tuple (dtype, layout, requires_grad, memory format,
    pin_memory); filled here after each element is checked, not by its own `__setstate__`."""
    if not isinstance(state, tuple) or len(state) != 5:
        raise IndexRefused("TensorProperties' state is not its 5 values")
    dtype, layout, requires_grad, memory_format, pin_memory = state
    if dtype not in _STORED_DTYPES or layout is not torch.strided:
        raise IndexRefused("a tensor of a dtype or layout this template never writes")
    if type(requires_grad) is not bool or type(pin_memory) is not bool:
        raise IndexRefused("TensorProperties' flags are not booleans")
    if memory_format not in _MEMORY_FORMATS:
        raise IndexRefused("TensorProperties' memory format is unknown")
    target.__dict__.update(
        dtype=dtype,
        layout=layout,
        requires_grad=requires_grad,
        memory_format=_MEMORY_FORMATS[memory_format],
        pin_memory=pin_memory,
    )


def load_index(stream: IO[bytes]) -> Metadata:
    """The index in `stream`, checked field by field; `IndexRefused` (or another exception of
    the unpickler's on a torn file) otherwise."""
    index = _IndexUnpickler(stream).load()
    _check(index)
    return index


# ----------------------------------------------------------------------------- the fields
def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise IndexRefused(f"{what} is not a non-negative integer")
    return value


def _is(value: Any, kind: type, what: str) -> Any:
    if type(value) is not kind:
        raise IndexRefused(f"{what} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _fields_set(value: Any, *required: str) -> None:
    missing = [name for name in required if name not in vars(value)]
    if missing:
        raise IndexRefused(f"{type(value).__name__} lacks its field {missing[0]!r}")


def _sizes(value: Any, what: str) -> torch.Size:
    _is(value, torch.Size, what)
    for dimension in value:
        _count(dimension, what)
    return value


def _check(index: Any) -> None:
    _is(index, Metadata, "the index")
    _fields_set(index, "state_dict_metadata")
    for key, entry in _is(index.state_dict_metadata, dict, "state_dict_metadata").items():
        _is(key, str, "a key")
        if type(entry) is BytesStorageMetadata:
            continue  # refused with its key by the reader: this writer never makes one
        _is(entry, TensorStorageMetadata, f"{key}'s entry")
        _fields_set(entry, "properties", "size", "chunks")
        _is(entry.properties, TensorProperties, f"{key}'s properties")
        _fields_set(entry.properties, "dtype", "layout", "memory_format")
        size = _sizes(entry.size, f"{key}'s size")
        if math.prod(size) > _MAX_ELEMENTS:
            raise IndexRefused(f"{key} is larger than any tensor a reader can hold")
        covered = 0
        for chunk in _is(entry.chunks, list, f"{key}'s chunks"):
            _is(chunk, ChunkStorageMetadata, f"a chunk of {key}")
            _fields_set(chunk, "offsets", "sizes")
            offsets, sizes = _sizes(chunk.offsets, key), _sizes(chunk.sizes, key)
            if not len(offsets) == len(sizes) == len(size) or any(
                start + length > whole
                for start, length, whole in zip(offsets, sizes, size, strict=True)
            ):
                raise IndexRefused(f"a chunk of {key} lies outside the tensor")
            covered += math.prod(sizes)
        if covered != math.prod(size):  # what no chunk covers would be read as garbage
            raise IndexRefused(f"the chunks of {key} do not cover the tensor exactly once")
    if index.planner_data is not None:
        for key, path in _is(index.planner_data, dict, "planner_data").items():
            _is(key, str, "a planner key")
            if type(path) is not tuple or not all(type(p) in (str, int) for p in path):
                raise IndexRefused(f"planner_data of {key} is not a key path")
    for where, stored in _is(index.storage_data, dict, "storage_data").items():
        _is(where, MetadataIndex, "a storage key")
        _fields_set(where, "fqn")
        _is(where.fqn, str, "a storage key's name")
        if where.offset is not None:
            _sizes(where.offset, f"{where.fqn}'s offset")
        if where.index is not None:
            _count(where.index, f"{where.fqn}'s chunk index")
        _is(stored, _StorageInfo, f"{where.fqn}'s storage")
        _fields_set(stored, "relative_path", "offset", "length")
        _is(stored.relative_path, str, f"{where.fqn}'s file")
        _count(stored.offset, f"{where.fqn}'s offset in its file")
        _count(stored.length, f"{where.fqn}'s length")
        if stored.transform_descriptors:
            raise IndexRefused(f"{where.fqn} is stored through transforms this template never uses")
    stored_keys = {(where.fqn, tuple(where.offset or ())) for where in index.storage_data}
    for key, entry in index.state_dict_metadata.items():
        for chunk in getattr(entry, "chunks", []):
            if (key, tuple(chunk.offsets)) not in stored_keys:
                raise IndexRefused(f"a chunk of {key} has no storage entry")
    meta = index.storage_meta
    if meta is not None:
        _is(meta, StorageMeta, "storage_meta")
        _fields_set(meta, "modules")
        for name in ("save_id", "load_id"):
            if getattr(meta, name) is not None:
                _is(getattr(meta, name), str, f"storage_meta.{name}")
        if meta.checkpoint_id is not None and type(meta.checkpoint_id) not in (str, PosixPath):
            raise IndexRefused("storage_meta.checkpoint_id is not a path")
        if not all(type(name) is str for name in _is(meta.modules, list, "storage_meta.modules")):
            raise IndexRefused("storage_meta.modules is not a list of names")


def files_named(index: Metadata) -> set[str]:
    """Every file the index reads from (relative to its directory, as written)."""
    return {stored.relative_path for stored in index.storage_data.values()}
