"""A run's checkpoints on disk: each written atomically with its checksum and published by a
rename, the `last` pointer, finding the newest complete one, keep-last-k, and setting aside what
a resume skipped as damaged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Any

import torch

from foundation.errors import UserError
from runtime.atomic import WRITES, atomic_write, atomic_write_text, fsync_directory
from runtime.checkpoint.directory import (
    SUMS,
    damage,
    file_sha256,
    split_state,
    write_directory,
)
from runtime.checkpoint.names import FORMAT, LAST, STEP_NAME, checksum_path
from runtime.plain_files import is_regular_file, open_for_reading
from runtime.rundir import DAMAGED_CHECKPOINTS, LAST_SHARDED


def checkpoint_digest(path: Path) -> str:
    """Which checkpoint this is, in one sha256: the file's, or a sharded checkpoint's
    SHA256SUMS (which holds every file's)."""
    return file_sha256(path / SUMS if path.is_dir() else path)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete what a killed writer left: temporary files, and the staging directories of
    sharded checkpoints (called before the first save, when no writer is live)."""
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stale:
        _remove(path)
    return stale


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _KeepsWriteErrors:
    """A stream that remembers the OSError of a failed write.

    Why: torch.save's zip writer turns a failed write (a full disk, a file size limit) into
    "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"; the cause, which the
    user must read, is only known here."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.stream.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.stream.flush()


def _save_payload(stream: IO[bytes], payload: dict[str, Any]) -> None:
    keeping = _KeepsWriteErrors(stream)
    try:
        torch.save({"format": FORMAT, **payload}, keeping)
    except RuntimeError:
        if keeping.error is not None:
            raise keeping.error from None
        raise


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write `step-<step>.pt` atomically, point `last.pt` at it, keep the newest `keep`. The
    whole save holds `WRITES`: a process ended from another thread (runtime/launcher_watch.py)
    never leaves `last.pt` renamed without its checksum."""
    with WRITES:
        return _save_checkpoint(directory, step, payload, keep)


def write_checkpoint_file(final: Path, payload: dict[str, Any]) -> str:
    """One checkpoint file and its `.sha256`, each written atomically; returns the checksum."""
    atomic_write(final, lambda stream: _save_payload(stream, payload), binary=True)
    checksum = file_sha256(final)
    atomic_write_text(checksum_path(final), f"{checksum}  {final.name}\n")
    return checksum


def write_checkpoint_directory(final: Path, payload: dict[str, Any], is_main: bool = True) -> None:
    """Collective: a sharded checkpoint, each rank writing its shards of `payload` (alone, as a
    conversion does: one shard file)."""
    tensors, rest = split_state(payload)
    with WRITES:
        write_directory(final, tensors, {"format": FORMAT, **rest}, is_main=is_main)


def _save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    final = directory / f"step-{step:08d}.pt"
    checksum = write_checkpoint_file(final, payload)
    link = directory / f".{LAST}.{step}.tmp"
    link.unlink(missing_ok=True)
    try:
        os.link(final, link)
    except OSError:  # filesystems without hard links: a copy, still renamed atomically
        link.write_bytes(final.read_bytes())
    os.replace(link, directory / LAST)
    atomic_write_text(checksum_path(directory / LAST), f"{checksum}  {LAST}\n")
    (directory / LAST_SHARDED).unlink(missing_ok=True)  # a sharded run's, continued here
    fsync_directory(directory)
    _prune(directory, keep, step, per_rank=False)
    return final


def save_checkpoint_directory(
    directory: Path,
    step: int,
    state: dict[str, Any],
    keep: int,
    *,
    is_main: bool,
) -> Path:
    """Collective: the directory `step-<step>` (runtime/checkpoint/directory.py), each rank
    writing its shards of `state`; rank 0 then points `last` at it and keeps the newest
    `keep`."""
    final = directory / f"step-{step:08d}"
    with WRITES:
        write_checkpoint_directory(final, state, is_main)
        if is_main:
            link = directory / f".{LAST_SHARDED}.tmp"
            link.unlink(missing_ok=True)
            os.symlink(final.name, link)
            os.replace(link, directory / LAST_SHARDED)
            for pointer in (directory / LAST, checksum_path(directory / LAST)):
                pointer.unlink(missing_ok=True)  # a single-file run's, continued sharded
            fsync_directory(directory)
            _prune(directory, keep, step, per_rank=True)
    return final


def _numbered_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Every `step-N` entry (a file, a directory, or a link, which is never complete)."""
    found = []
    for path in directory.glob("step-*"):
        match = STEP_NAME.match(path.name)
        if not match or path.name != f"step-{int(match.group(1)):08d}{match.group(2) or ''}":
            continue  # only the names this template writes: `step-8` is not step 8's
        if path.is_symlink() or path.is_dir() != bool(match.group(2)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _prune(directory: Path, keep: int, saved_step: int, per_rank: bool) -> None:
    """Keep the newest `keep` checkpoints at or below `saved_step`, the one just written among
    them. A checkpoint above it (a resume from an earlier one) is not counted and not removed:
    pruning by step number alone would keep a damaged newer checkpoint and delete the only good
    one. Counted: whole checkpoints (a file with its .sha256, a directory with its SHA256SUMS);
    a damaged one was moved aside when the resume skipped it (`set_aside`)."""
    saved = [path for step, path in _numbered_checkpoints(directory) if step == saved_step]
    just_written = _just_written(saved, per_rank)
    below = [
        path
        for step, path in _numbered_checkpoints(directory)
        if step <= saved_step and _looks_whole(path) and path != just_written
    ] + [just_written]  # the one just written is the newest, whatever its name sorts as
    for path in below[:-keep]:
        _remove(path)
        checksum_path(path).unlink(missing_ok=True)


def _just_written(paths: list[Path], per_rank: bool) -> Path:
    """Of the entries of one step (a file and a directory, when a run switched formats), the
    one in the format just written."""
    return next(path for path in paths if path.is_dir() == per_rank and not path.is_symlink())


def _looks_whole(path: Path) -> bool:
    """Whole as written, without reading it again: its checksums are next to it."""
    if path.is_symlink():
        return False
    if path.is_dir():
        return is_regular_file(path / SUMS)
    return is_regular_file(path) and is_regular_file(checksum_path(path))


def set_aside(directory: Path, damaged: list[Path]) -> list[Path]:
    """Move checkpoints that a resume skipped into `checkpoints/damaged/`: kept for a look, out
    of the way of `--resume auto` and of pruning, never deleted by the template."""
    moved = []
    aside = directory / DAMAGED_CHECKPOINTS
    for path in damaged:
        if not (path.exists() or path.is_symlink()):
            continue
        if not (aside.exists() or aside.is_symlink()):
            aside.mkdir()
        if aside.is_symlink() or not aside.is_dir():
            raise UserError(f"{aside} is not a plain directory; move it away and resume again")
        for part in (path, checksum_path(path)):
            if part.exists() or part.is_symlink():
                target = aside / part.name
                if target.exists() or target.is_symlink():
                    target = aside / f"{part.name}.{os.getpid()}"
                os.rename(part, target)
        moved.append(aside / path.name)
    if moved:
        fsync_directory(directory)
    return moved


def recorded_checksum(path: Path) -> str | None:
    """The sha256 a `.sha256` file records (None: no such regular file)."""
    checksum_file = checksum_path(path)
    if not is_regular_file(checksum_file):
        return None
    with open_for_reading(checksum_file) as stream:
        words = stream.read(4096).decode("ascii", errors="replace").split()
    return words[0] if words else ""


def is_complete(path: Path) -> bool:
    if path.is_symlink():
        return False
    if path.is_dir():
        return damage(path) is None
    recorded = recorded_checksum(path)
    return is_regular_file(path) and recorded is not None and recorded == file_sha256(path)


def newest_complete(directory: Path) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint whose checksum matches, and the newer ones that were skipped."""
    skipped = []
    for _, path in reversed(_numbered_checkpoints(directory)):
        if is_complete(path):
            return path, skipped
        skipped.append(path)
    return None, skipped
