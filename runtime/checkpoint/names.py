"""The names of a checkpoint's files: the format tag every payload carries, `step-N` and
`step-N.pt`, the `.sha256` beside a file and the `last.pt` pointer."""

from __future__ import annotations

import re
from pathlib import Path

from runtime.rundir import LAST_CHECKPOINT

FORMAT = "reproducible-ddp-template/checkpoint/v1"

LAST = LAST_CHECKPOINT

STEP_NAME = re.compile(r"^step-(\d+)(\.pt)?$")  # a file, or a sharded checkpoint's directory


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
