"""What a run prints: the start line, the progress line, the epoch lines, the end.

One owner of the console, apart from the files (runtime/manifest.py, runtime/metrics.py), so
what a user reads can change without touching what a run records. Only rank 0 prints; on the
other ranks every method does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from runtime.progress import ProgressLine
from training.events import Position


class Console:
    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.progress = ProgressLine(sys.stdout, epochs) if enabled else None

    def say(self, message: str) -> None:
        """A line of its own: the progress line is cleared first, so nothing is overwritten."""
        if self.enabled:
            if self.progress is not None:
                self.progress.clear()
            print(message, flush=True)

    def warn(self, message: str) -> None:
        if self.enabled:
            print(f"warning: {message}", file=sys.stderr)

    def started(self, run_dir: Path, identity: Any, where: str, verdict: str) -> None:
        for note in identity.resume_notes:
            if self.enabled:
                print(f"note: {note}", file=sys.stderr, flush=True)
        self.say(
            f"run {run_dir}  seed {identity.seed}  profile {identity.profile}  {where}\n"
            f"determinism: {verdict}"
        )

    def step(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        if self.progress is not None:
            self.progress.update(position, batches_per_epoch, samples)

    def epoch(self, position: Position, metrics: dict[str, float]) -> None:
        self.say(
            f"epoch {position.epoch:>3}/{self.epochs}  step {position.step:>6}  "
            f"train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"{_ema(metrics)}lr {metrics['lr']:.5f}  {metrics['samples_per_s']:,.0f} samples/s",
        )

    def finished(
        self,
        run_dir: Path,
        position: Position,
        final_metrics: dict[str, float],
        wall_time_s: float,
        verdict: str,
        compile_s: float | None = None,
    ) -> None:
        compiling = "" if compile_s is None else f" (compiling {compile_s:.1f}s)"
        self.say(
            f"done: val_acc {final_metrics['val_acc']:.4f}  "
            f"val_loss {final_metrics['val_loss']:.4f}  {_ema(final_metrics)}step {position.step}  "
            f"{wall_time_s:.1f}s{compiling}\n"
            f"determinism: {verdict}\noutputs: {run_dir}"
        )


def _ema(metrics: dict[str, float]) -> str:
    """The EMA weights' accuracy beside the raw one, when the run keeps an EMA."""
    return f"ema_val_acc {metrics['ema_val_acc']:.4f}  " if "ema_val_acc" in metrics else ""
