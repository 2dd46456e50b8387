"""Progress inside an epoch, on rank 0's terminal: step / steps per epoch, samples/s, time left.

Why: an ImageNet-sized epoch takes hours, and a run that prints only at epoch ends looks hung.
On a terminal the line is redrawn in place a few times a second; in a file or a CI log, where
carriage returns pile up into one unreadable line, a plain line is printed every `interval_s`.
The hot path costs one clock read per step; nothing here touches the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from training.events import Position

TERMINAL_INTERVAL_S = 0.5
LOG_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLine:
    def __init__(
        self,
        stream: TextIO,
        epochs: int,
        interactive: bool | None = None,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.epochs = epochs
        self.interactive = stream.isatty() if interactive is None else interactive
        default = TERMINAL_INTERVAL_S if self.interactive else LOG_INTERVAL_S
        self.interval_s = default if interval_s is None else interval_s
        self.clock = clock
        self._window: tuple[int, float, int] | None = None  # (epoch, start time, start batch)
        self._samples = 0
        self._next_draw = 0.0
        self._drawn = False

    def update(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        now = self.clock()
        if self._window is None or self._window[0] != position.epoch:
            # The window opens at the end of this epoch's first step seen here (mid-epoch after a
            # resume) and counts the steps after it: their samples and their time.
            self._window = (position.epoch, now, position.batch_in_epoch)
            self._samples = 0
            self._next_draw = now + self.interval_s
            return
        self._samples += samples
        if now < self._next_draw or position.batch_in_epoch >= batches_per_epoch:
            return
        self._next_draw = now + self.interval_s
        self._draw(self.describe(position, batches_per_epoch, now))

    def describe(self, position: Position, batches_per_epoch: int, now: float) -> str:
        assert self._window is not None
        _, started, first_batch = self._window
        elapsed = max(now - started, 1e-9)
        done = position.batch_in_epoch - first_batch
        left = (batches_per_epoch - position.batch_in_epoch) * elapsed / max(done, 1)
        percent = 100 * position.batch_in_epoch / max(batches_per_epoch, 1)
        return (
            f"epoch {position.epoch + 1}/{self.epochs}  "
            f"step {position.batch_in_epoch}/{batches_per_epoch} ({percent:.0f}%)  "
            f"{self._samples / elapsed:,.0f} samples/s  {format_duration(left)} left in epoch"
        )

    def _draw(self, text: str) -> None:
        if self.interactive:
            self.stream.write(f"\r\033[K{text}")
            self._drawn = True
        else:
            self.stream.write(f"progress: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the redrawn line before a permanent line is printed (terminal only)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
