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
import struct
import sys
from dataclasses import dataclass

from foundation.errors import UserError
from runtime.plain_files import NotAPlainFile, open_descriptor
from runtime.provenance import now_iso
from runtime.rundir import LOCK_FILE, RunDirectory

__all__ = ["LOCK_FILE", "WriterLock", "claim_run_directory", "current_writer", "is_stale"]
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
    is locked only if it exists (a directory without it has no writer), and nothing in the
    directory changes, the holder's record included: a command refused later leaves the run as
    it found it (a training refused meanwhile learns this process's PID from the lock itself).
    Claiming again what this process holds returns the same lock; it is announced then.

    A run directory holding symbolic links where the template writes is refused first."""
    run_dir.refuse_links()
    lock = next((held for held in _HELD if held.run_dir == run_dir), None)
    if lock is None:
        path = run_dir.path / LOCK_FILE
        if before_writing and not path.exists():
            return None  # every writer creates it first: nobody writes there now
        if not before_writing:
            run_dir.create()
        try:
            descriptor = open_descriptor(path, os.O_RDWR | (0 if before_writing else os.O_CREAT))
        except NotAPlainFile as error:
            raise UserError(f"{run_dir}: {error}; a run directory's lock is a plain file") from None
        lock = _lock(run_dir, descriptor)
        if lock is None:
            return None
        _HELD.append(lock)
        if is_stale(run_dir):
            print(
                f"note: {run_dir}: its last training ended without recording it (the manifest "
                "says 'running' and no process holds the directory: killed, or its node lost)",
                file=sys.stderr,
            )
    if not lock.announced and not before_writing:
        lock.announce()
    return lock


def _lock(run_dir: RunDirectory, descriptor: int) -> WriterLock | None:
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            holder = _holder(descriptor)
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
    (never called by the holder itself: see the pitfall above). It asks the kernel whether a
    lock is held (F_GETLK) without taking one, so a training that starts at this instant is
    never refused because of the question."""
    path = run_dir.path / LOCK_FILE
    try:
        descriptor = open_descriptor(path, os.O_RDONLY)  # a reader may not be allowed to write
    except OSError:
        return None
    try:
        return _holder(descriptor) if _locking_pid(descriptor) is not None else None
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


def _holder(descriptor: int) -> dict[str, str]:
    """The holder's record, or, where it has not written one yet (it is still checking its
    command), the PID that the kernel says holds the lock."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    pid = _locking_pid(descriptor)
    if pid is not None and pid > 0 and str(record.get("pid")) != str(pid):
        return {"host": socket.gethostname(), "pid": str(pid), "since": "starting"}
    return {str(key): str(value)[:80] for key, value in record.items()}


# struct flock as Linux lays it out: l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = "hhqqi"


def _locking_pid(descriptor: int) -> int | None:
    """The PID holding a lock on the file (0 where the kernel cannot tell, across hosts), or
    None when no lock is held; asked with F_GETLK, which takes no lock."""
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        answer = fcntl.fcntl(descriptor, fcntl.F_GETLK, query)
    except OSError:
        return None
    kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
    return None if kind == fcntl.F_UNLCK else pid
