"""The resume plan: which checkpoint a run continues from (`--resume auto`, a path, a torchrun
restart) and whether its logs continue, decided once before anything is written."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.errors import UserError
from foundation.process import process_launch
from runtime.checkpoint.contents import load_checkpoint
from runtime.checkpoint.files import newest_complete
from runtime.rundir import CHECKPOINTS, DAMAGED_CHECKPOINTS, RunDirectory


@dataclass(frozen=True)
class ResumePoint:
    """What a run continues from: a loaded checkpoint (None: start fresh), whether the run
    directory's logs continue (`--resume auto`, a torchrun restart, or a path into it), and the
    newer checkpoints `--resume auto` skipped as incomplete or damaged."""

    checkpoint: dict[str, Any] | None
    continuing: bool
    path: Path | None = None
    skipped: list[Path] = field(default_factory=list)

    @property
    def step(self) -> int | None:
        """The step the logs continue after (None: a fresh run directory)."""
        if not self.continuing:
            return None
        return self.checkpoint["step"] if self.checkpoint else 0


def resume_point(run_dir: RunDirectory, request: str | None) -> ResumePoint:
    """`--resume auto`, `--resume PATH`, or a fresh run (refusing a directory that already
    holds one). Under `torchrun --max-restarts` a restarted worker group is started with the
    same command line; TORCHELASTIC_RESTART_COUNT > 0 makes it `auto`. Any problem with the
    file is a one-line error, before anything is written."""
    if request is None and process_launch().restart_attempt > 0:
        request = "auto"
    if request is None:
        run_dir.refuse_to_overwrite()
        return ResumePoint(None, continuing=False)
    skipped: list[Path] = []
    if request == "auto":
        run_dir.refuse_links()
        path, skipped = newest_complete(run_dir.checkpoint_dir)
        if skipped and process_launch().rank == 0:
            names = ", ".join(path.name for path in skipped)
            print(
                f"warning: skipped incomplete or damaged checkpoint(s): {names} (moved to "
                f"{CHECKPOINTS}/{DAMAGED_CHECKPOINTS}/ once this run starts writing)",
                file=sys.stderr,
            )
    else:
        path = Path(request)
        if not (path.exists() or path.is_symlink()):
            raise UserError(f"--resume: checkpoint not found: {path}")
    checked = request == "auto"  # newest_complete read every checksum
    checkpoint = None if path is None else load_checkpoint(path, False, checked)
    return ResumePoint(checkpoint, run_dir.holds_a_run(), path, skipped)
