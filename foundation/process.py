"""Where this process sits in a launch: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and the
torchrun restart attempt, read from the environment in one place.

Why one place: the global rank decides which rank prints an error, which seeds a process draws
and which rank writes; five readers of `os.environ` would each need the same defaults and the
same one-line error for a malformed value. torchrun (or SLURM's srun, or a user) sets these
before the interpreter starts and nothing changes them later, so they are read once.

Why the global rank everywhere: RANK is unique across nodes; LOCAL_RANK repeats on every node
(seeding from it makes GPU 0 of each node draw the same streams). LOCAL_RANK only picks the GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from foundation.errors import UserError


@dataclass(frozen=True)
class ProcessLaunch:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_attempt: int = 0  # how many times torchrun restarted this worker group

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


@cache
def process_launch() -> ProcessLaunch:
    """This process's place in the launch; a single process when no launcher set anything."""
    world_size = _env_int("WORLD_SIZE", 1)
    return ProcessLaunch(
        rank=_env_int("RANK", 0),
        world_size=world_size,
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", world_size),
        restart_attempt=_env_int("TORCHELASTIC_RESTART_COUNT", 0),
    )


def process_rank() -> int:
    """The global rank (0 without a launcher). Never raises: it decides who prints an error,
    so a malformed RANK must not hide the error being reported."""
    try:
        return process_launch().rank
    except UserError:
        return 0


@dataclass(frozen=True)
class NextCommands:
    """What a message tells the user to run next, in the words of whoever started this run:
    make's when `make train` did (the Makefile exports TEMPLATE_RESUME_COMMAND), train.py's
    otherwise; a message that speaks train.py to someone who typed make is one more puzzle."""

    resume: str = "--resume auto"
    another_run: str = "another --seed / --output-dir"


def next_commands() -> NextCommands:
    resume = os.environ.get("TEMPLATE_RESUME_COMMAND")
    return NextCommands(resume, "another SEED= / OUTPUT_DIR=") if resume else NextCommands()
