"""Atomic, checksummed checkpoints that load with `torch.load(weights_only=True)`.

Why this shape:
- A killed writer must never leave a `last.pt` that cannot be loaded: each checkpoint is written
  to a temporary file in the same directory, flushed, fsynced and renamed into place; only then is
  its checksum file written and `last.pt` re-pointed (a hard link, renamed over the old one).
- A checkpoint without a matching `.sha256` file is incomplete (the writer died between the two
  renames) or damaged, and `--resume auto` falls back to the newest complete one.
- `weights_only=True` refuses arbitrary pickles, so the payload holds only tensors and plain values.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import IO, Any

import torch

from engine.atomic import atomic_write, atomic_write_text, fsync_directory
from engine.errors import UserError, first_line

FORMAT = "reproducible-ddp-template/checkpoint/v1"
LAST = "last.pt"
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files left by a killed writer (only rank 0 writes, so none is live)."""
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
    """Write `step-<step>.pt` atomically, point `last.pt` at it, keep the newest `keep`."""
    final = directory / f"step-{step:08d}.pt"
    atomic_write(final, lambda stream: _save_payload(stream, payload), binary=True)
    checksum = file_sha256(final)
    atomic_write_text(_checksum_path(final), f"{checksum}  {final.name}\n")
    link = directory / f".{LAST}.{step}.tmp"
    link.unlink(missing_ok=True)
    try:
        os.link(final, link)
    except OSError:  # filesystems without hard links: a copy, still renamed atomically
        link.write_bytes(final.read_bytes())
    os.replace(link, directory / LAST)
    atomic_write_text(_checksum_path(directory / LAST), f"{checksum}  {LAST}\n")
    fsync_directory(directory)
    _prune(directory, keep)
    return final


def _numbered_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob("step-*.pt"):
        match = _STEP_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _prune(directory: Path, keep: int) -> None:
    for _, path in _numbered_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)
        _checksum_path(path).unlink(missing_ok=True)


def is_complete(path: Path) -> bool:
    checksum_file = _checksum_path(path)
    if not path.is_file() or not checksum_file.is_file():
        return False
    recorded = checksum_file.read_text().split()[:1]
    return recorded == [file_sha256(path)]


def newest_complete(directory: Path) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint whose checksum matches, and the newer ones that were skipped."""
    skipped = []
    for _, path in reversed(_numbered_checkpoints(directory)):
        if is_complete(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check a checkpoint; any problem is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    checksum_file = _checksum_path(path)
    if checksum_file.is_file():
        recorded = checksum_file.read_text().split()[:1]
        if recorded != [file_sha256(path)]:
            raise UserError(
                f"checkpoint {path} is corrupt or truncated (sha256 does not match {checksum_file.name})"
            )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise UserError(f"cannot load checkpoint {path}: {first_line(error)[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this template (format {FORMAT!r} expected)")
    return payload
