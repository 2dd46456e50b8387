"""Rank 0's failed writes, held until the next vote stops every rank at the same step.

Why not raise at once: only rank 0 writes, so only rank 0 knows its write failed (a full disk, a
quota, a file size limit, or a checkpoint refused for holding non-finite values). Raising there
alone would leave the other ranks waiting in their next collective; the vote after the write
carries the flag to every rank (runtime/session.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from foundation.faults import OutputWriteFailed, TrainingFault


class WriteFailures:
    def __init__(self) -> None:
        self.first: TrainingFault | None = None

    @property
    def failed(self) -> bool:
        return self.first is not None

    @contextlib.contextmanager
    def guarded(self, path: Path) -> Iterator[None]:
        """Keep the first failure of the writes inside, as a one-line fault naming the file."""
        try:
            yield
        except OSError as error:
            reason = f"cannot write {path}: {error.strerror or error}".rstrip()
            self.first = self.first or OutputWriteFailed(reason)
        except TrainingFault as fault:
            self.first = self.first or fault
