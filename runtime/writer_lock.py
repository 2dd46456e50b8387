"""One writer per run directory: an `fcntl` lock that rank 0 holds for the run's life.

Why: two trainings writing one run directory (the same command twice, `--resume auto` while the
first still runs, orphans of a killed launcher) interleave metrics rows and checkpoints into a
run no single training produced. Measured before this lock: a chaos run ended with the right
weights but 11 metrics rows that no uninterrupted run has.

Why `fcntl.lockf` on a file in the run directory: the kernel releases it when the holder dies,
however it dies (SIGKILL, the OOM killer), so there is never a stale lock to clean up; and POSIX
record locks work across hosts on a shared filesystem whose server supports them (NFSv4, NFSv3
with lockd, Lustre and GPFS with locking on). Where the filesystem has no locks (`ENOLCK`, or
`flock`-less FUSE mounts), the run goes on with a warning: nothing refuses a second writer there.

The pitfall this module avoids: a POSIX lock belongs to the process, and closing *any*
descriptor of the file in that process releases it. So the holder's own details are read back
only through the descriptor that holds the lock, and nothing else here opens the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from dataclasses import dataclass

from foundation.errors import UserError
from runtime.provenance import now_iso
from runtime.rundir import RunDirectory

LOCK_FILE = ".writer.lock"
_HELD: list[WriterLock] = []  # the holder's lock lives as long as the process


@dataclass
class WriterLock:
    run_dir: RunDirectory
    descriptor: int
    announced: bool = False  # the holder's details are in the file

    def announce(self) -> None:
        """Write who holds the lock (host, PID, since when) for a refused second training."""
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": now_iso()}
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, (json.dumps(holder) + "\n").encode(), 0)
        self.announced = True


def claim_run_directory(run_dir: RunDirectory, before_writing: bool = False) -> WriterLock | None:
    """Become the one writer of `run_dir` (created if needed), or stop in one line naming the
    holder (host, PID, since when). None where the filesystem has no locks.

    `before_writing`: the early claim, before the command is checked against the run: the file
    is locked only if it exists (a directory without it has no writer), and its record of the
    holder rewritten, so that a training refused meanwhile names this process; nothing else in
    the directory changes. Claiming again what this process holds returns the same lock."""
    lock = next((held for held in _HELD if held.run_dir == run_dir), None)
    if lock is None:
        path = run_dir.path / LOCK_FILE
        if before_writing and not path.is_file():
            return None  # every writer creates it first: nobody writes there now
        run_dir.create()
        lock = _lock(run_dir, os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        if lock is None:
            return None
        _HELD.append(lock)
        if is_stale(run_dir):
            print(
                f"note: {run_dir}: its last training ended without recording it (the manifest "
                "says 'running' and no process holds the directory: killed, or its node lost)",
                file=sys.stderr,
            )
    if not lock.announced:
        lock.announce()
    return lock


def _lock(run_dir: RunDirectory, descriptor: int) -> WriterLock | None:
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            holder = _read(descriptor)
            os.close(descriptor)
            raise UserError(
                f"{run_dir} is being written by another training ({describe(holder)}); "
                "wait for it to end or stop it first: a run directory has one writer"
            ) from None
        os.close(descriptor)
        print(
            f"warning: {run_dir}: the filesystem has no file locks ({error.strerror}); "
            "a second training on this run directory would not be refused",
            file=sys.stderr,
        )
        return None
    return WriterLock(run_dir, descriptor)


def current_writer(run_dir: RunDirectory) -> dict[str, str] | None:
    """Who holds `run_dir` now (host, pid, since), or None: for commands that start trainings
    (never called by the holder itself: see the pitfall above)."""
    path = run_dir.path / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY)  # a reader may not be allowed to write
    except OSError:
        return None
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: blocks no one for long
    except OSError as error:
        return _read(descriptor) if error.errno in (errno.EAGAIN, errno.EACCES) else None
    else:
        fcntl.lockf(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def is_stale(run_dir: RunDirectory) -> bool:
    """The manifest says `running`, but the caller holds the lock (or nobody does): the process
    that wrote it is gone without a word."""
    manifest = run_dir.read_manifest() or {}
    return manifest.get("status") == "running" and (
        any(lock.run_dir == run_dir for lock in _HELD) or current_writer(run_dir) is None
    )


def describe(holder: dict[str, str]) -> str:
    return (
        f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, "
        f"since {holder.get('since', '?')}"
    )


def _read(descriptor: int) -> dict[str, str]:
    try:
        return json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
