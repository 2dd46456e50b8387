"""Files of a directory that may come from someone else (a run directory, a checkpoint), read and
appended to without following a symbolic link and without blocking on a FIFO.

Why: checkpoints and run directories travel between people. A link planted in one
(`metrics.jsonl -> ~/.bashrc`, `.writer.lock -> /some/file`) would turn an append or a lock
record into a write somewhere else, and a FIFO in a checkpoint would hang the reader forever.
Whole-file writes need none of this: `runtime.atomic` renames a new file over the name, which
replaces a link rather than writing through it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class NotAPlainFile(OSError):
    """The path is a link, a FIFO, a device or a directory where a regular file must be."""


def is_regular_file(path: Path) -> bool:
    """A regular file itself, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_descriptor(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` that refuses a link at the last component and anything but a regular file
    (opened without blocking, so a FIFO is seen rather than waited on)."""
    try:
        descriptor = os.open(path, flags | _NO_FOLLOW | os.O_NONBLOCK, mode)
    except OSError as error:
        if path.is_symlink():
            raise NotAPlainFile(f"{path} is a symbolic link") from None
        if path.is_dir():
            raise NotAPlainFile(f"{path} is a directory") from None
        raise error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise NotAPlainFile(f"{path} is not a regular file")
    os.set_blocking(descriptor, True)
    return descriptor


def open_for_reading(path: Path) -> IO[bytes]:
    return os.fdopen(open_descriptor(path, os.O_RDONLY), "rb")


def append_text(path: Path, text: str) -> None:
    """Append `text` to `path` (created if missing), never through a link."""
    descriptor = open_descriptor(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(descriptor, "a") as stream:
        stream.write(text)
