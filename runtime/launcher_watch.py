"""A worker whose launcher is gone stops within a second and writes nothing more.

Why: torchrun starts each worker in a session of its own, so SIGKILL to torchrun (the OOM killer,
a crashed node agent, an impatient user) or to its process group leaves the workers running as
orphans (parent PID 1). Measured before this watch: they kept training and appending to the run
directory until the run ended, and a restart with `--resume auto` became a second writer of the
same files. SLURM with `ProctrackType=proctrack/pgid` has the same blind spot.

Why a thread that polls the parent, not `PR_SET_PDEATHSIG`: the death signal fires when the
parent *thread* that forked the worker ends, not the parent process, and a Python handler runs
only between bytecodes of the main thread, which may sit for minutes inside a gloo collective or
the c10d store's connect (measured: > 15 min in `_create_c10d_store` after the launcher died). A
daemon thread sees the new parent however the main thread is blocked, and `os._exit` ends the
process from there.

Why it takes `runtime.atomic.WRITES` before it exits: every write into the run directory holds
that lock, so an exit never cuts a metrics row or leaves a temporary checkpoint behind; what is on
disk is what a later `--resume auto` expects.

The same thread also bounds waits that no timeout of torch's bounds (`deadline`): joining the
process group when the store's host is gone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from foundation.process import next_commands
from runtime.atomic import WRITES

POLL_S = 0.2
LAUNCHER_GONE_EXIT = 1


def _leave(message: str) -> None:
    """One line on stderr (the launcher's pipe may be gone with it), then exit, between writes."""
    with WRITES:
        with contextlib.suppress(OSError, ValueError):
            print(message, file=sys.stderr, flush=True)
        os._exit(LAUNCHER_GONE_EXIT)


class LauncherWatch:
    """Started first thing in a worker that torchrun launched (`watch_launcher`)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.launcher = os.getppid()
        # Orphaned already, while Python was still importing: the parent is init (a container
        # whose PID 1 is torchrun itself is not an orphan). An orphan adopted by a subreaper
        # (systemd --user, `prctl(PR_SET_CHILD_SUBREAPER)`) is not seen here: its parent cannot
        # be told from the launchers other than torchrun (torch.distributed.launch, accelerate,
        # elastic_launch) that legitimately start workers.
        self.orphaned_at_start = self.launcher == 1 and not _is_torch_launcher(1)
        self._deadlines: dict[int, tuple[float, str]] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="launcher-watch", daemon=True)

    def start(self) -> LauncherWatch:
        self._thread.start()
        return self

    @contextlib.contextmanager
    def deadline(self, seconds: float, what: str) -> Iterator[None]:
        """If the body is still running after `seconds`, the process exits with `what`."""
        with self._lock:
            key = next(self._keys)
            self._deadlines[key] = (time.monotonic() + seconds, what)
        try:
            yield
        finally:
            with self._lock:
                self._deadlines.pop(key, None)

    def _run(self) -> None:
        while True:
            if self.orphaned_at_start or os.getppid() != self.launcher:
                which = "" if self.orphaned_at_start else f" (pid {self.launcher})"
                _leave(
                    f"error: rank {self.rank}: its launcher{which} is gone; "
                    f"stopped without writing more (continue with {next_commands().resume})"
                )
            now = time.monotonic()
            with self._lock:
                expired = [what for due, what in self._deadlines.values() if now >= due]
            if expired:
                _leave(f"error: rank {self.rank}: {expired[0]}")
            time.sleep(POLL_S)


def _is_torch_launcher(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # cannot tell: do not stop a run that may be fine
    return b"torchrun" in command or b"torch.distributed.run" in command


_WATCH: LauncherWatch | None = None


def watch_launcher(rank: int) -> LauncherWatch | None:
    """Under torchrun (TORCHELASTIC_RUN_ID), watch the launcher for this process's life.

    Not for a plain `python train.py`: its parent is a shell or make, and a run that outlives
    its shell (nohup, a closed terminal after `disown`) is what the user asked for."""
    global _WATCH
    if _WATCH is None and "TORCHELASTIC_RUN_ID" in os.environ:
        _WATCH = LauncherWatch(rank).start()
    return _WATCH


def launcher_gone() -> bool:
    """This worker's launcher is gone (the watch may not have acted yet): a fault seen now is
    the launcher's death seen through a collective or the store, and nothing more is written."""
    return _WATCH is not None and (_WATCH.orphaned_at_start or os.getppid() != _WATCH.launcher)


@contextlib.contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """`LauncherWatch.deadline` when a watch runs; otherwise the body as it is."""
    if _WATCH is None:
        yield
        return
    with _WATCH.deadline(seconds, what):
        yield
