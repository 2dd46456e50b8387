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
import shlex
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
    make's when make did (the Makefile exports TEMPLATE_LAUNCHED_BY=make, and for `make train`
    the command without its ARGS and the ARGS apart), train.py's and torchrun's otherwise; a
    message that speaks train.py to someone who typed make is one more puzzle."""

    make_train: str | None = None  # `make train SEED=7 …` without ARGS and RESUME
    make_args: str = ""  # the ARGS of that command, as typed
    by_make: bool = False

    @property
    def resume(self) -> str:
        return self.resume_with()

    def resume_with(self, *assignments: str) -> str:
        """The command that continues this run, with `assignments` (`key=value`) given again;
        each replaces what the command's ARGS said of the same key."""
        if self.make_train is None:
            return " ".join(("--resume auto", *assignments))
        args = self.make_args.strip()
        if assignments:
            keys = {a.split("=", 1)[0] for a in assignments}
            kept = [a for a in _words(args) if a.split("=", 1)[0] not in keys]
            args = " ".join([*kept, *assignments])
        given = f" ARGS='{args}'" if args else ""
        return f"{self.make_train}{given} RESUME=auto"

    def init_from(self, checkpoint: object) -> str:
        """How a new run starts from a checkpoint's weights."""
        return f"INIT_FROM={checkpoint}" if self.by_make else f"--init-from {checkpoint}"

    @property
    def another_run(self) -> str:
        return "another SEED= / OUTPUT_DIR=" if self.by_make else "another --seed / --output-dir"

    def process_counts(self, counts: list[int], nodes: int = 1) -> str:
        """How to launch one of `counts` processes in all: `NPROC=2 or NPROC=4` under make."""
        spelled = " or ".join(map(str, counts))
        if nodes > 1:
            flags = "NNODES x NPROC" if self.by_make else "--nnodes x --nproc_per_node"
            return f"{flags} = {spelled}"
        if self.by_make:
            return " or ".join(f"NPROC={count}" for count in counts)
        return f"torchrun --nproc_per_node={spelled}"


def _words(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError:  # an unbalanced quote: make passed it on as typed
        return args.split()


def next_commands() -> NextCommands:
    make_train = os.environ.get("TEMPLATE_TRAIN_COMMAND")
    return NextCommands(
        make_train=make_train,
        make_args=os.environ.get("TEMPLATE_TRAIN_ARGS", ""),
        by_make=make_train is not None or os.environ.get("TEMPLATE_LAUNCHED_BY") == "make",
    )
