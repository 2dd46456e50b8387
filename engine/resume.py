"""Which checkpoint a run continues from: `--resume auto`, `--resume PATH`, or a torchrun restart.

Why a restart implies `auto`: under `torchrun --max-restarts`, a failed worker group is started
again with the same command line; TORCHELASTIC_RESTART_COUNT > 0 tells the new processes that
they are a restart, so they continue from the newest complete checkpoint instead of refusing the
existing run directory.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoint import newest_complete
from engine.errors import UserError
from engine.rundir import holds_a_run, refuse_to_overwrite


@dataclass(frozen=True)
class ResumeDecision:
    checkpoint: Path | None
    continuing: bool  # True: the run directory's logs continue (auto / restart)

    @property
    def fresh(self) -> bool:
        return self.checkpoint is None


def decide_resume(request: str | None, run_dir: Path) -> ResumeDecision:
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    if request is None and restarted:
        request = "auto"
    if request is None:
        refuse_to_overwrite(run_dir)
        return ResumeDecision(None, continuing=False)
    if request == "auto":
        newest, skipped = newest_complete(run_dir / "checkpoints")
        if skipped and os.environ.get("RANK", "0") == "0":
            names = ", ".join(path.name for path in skipped)
            print(f"warning: skipped incomplete or damaged checkpoint(s): {names}", file=sys.stderr)
        return ResumeDecision(newest, continuing=holds_a_run(run_dir))
    path = Path(request)
    if not path.is_file():
        raise UserError(f"--resume: checkpoint not found: {path}")
    return ResumeDecision(path, continuing=holds_a_run(run_dir))
