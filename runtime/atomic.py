"""Atomic file replacement: write a temporary file in the target's directory, flush, fsync, rename.

Why: a reader (or a resumed run) must only ever see the old file or the complete new one, even if
the writer is SIGKILLed halfway. Temporary names start with '.' and end with '.tmp' so leftovers
of a killed writer are recognisable and can be removed.

`WRITES` is held by every write into a run directory (these and the metrics rows): a process that
must end at once from another thread (runtime/launcher_watch.py) takes it first, so whatever it
leaves on disk is whole.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)

WRITES = threading.RLock()


def atomic_write(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    with WRITES:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(handle, 0o666 & ~_UMASK)  # mkstemp creates 0600: give normal permissions
            with os.fdopen(handle, "wb" if binary else "w") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text))


def fsync_directory(directory: Path) -> None:
    """Make renames inside `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
