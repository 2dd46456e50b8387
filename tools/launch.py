"""Starting training runs: the environment, the launcher, and `train_subprocess`.

One place for it, so verify, the benchmarks, the multi-seed runner, the GPU check and the tests
launch runs exactly as `make train` does, and read back what the run wrote through its run
directory (runtime/rundir.py) rather than through its console.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.rundir import RunDirectory, find_one_run
from tools.processes import run_process

TORCHRUN_AGENT = Path(__file__).with_name("torchrun_agent.py")

# What every run is started with, here and in the Makefile, the Dockerfile and the SLURM script
# (tests/unit/test_launch_environment.py holds them to these values): the hash seed (set inside
# train.py it would be too late), cuBLAS's deterministic workspace (it must be set before the
# first cuBLAS call), and no update check by albumentations (it asks PyPI on import: no network
# at run time).
REPRODUCIBLE_ENVIRONMENT = {
    "PYTHONHASHSEED": "0",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}


def launch_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child run: the variables above unless the caller set
    them already (make does), unbuffered output, then `extra`."""
    env = {**REPRODUCIBLE_ENVIRONMENT, **os.environ, "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def local_launcher(nproc: int) -> list[str]:
    """`python` for one process; torchrun `--standalone` for several (tools/torchrun_agent.py:
    torchrun's own agent, started without the interpreter's teardown cost)."""
    if nproc <= 1:
        return [sys.executable]
    return [
        sys.executable,
        str(TORCHRUN_AGENT),
        "--standalone",
        f"--nproc_per_node={nproc}",
    ]


def train_command(flags: Sequence[str], nproc: int = 1, entry: str = "train.py") -> list[str]:
    """The command line of one run on this machine: the launcher, train.py, its flags."""
    return [*local_launcher(nproc), entry, *flags]


@dataclass(frozen=True)
class TrainedRun:
    """A finished train.py process: how it ended, what it printed, where it wrote."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def run(self) -> RunDirectory:
        """The one run directory under the output folder (an error if there are several)."""
        return find_one_run(self.output_dir)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def train_subprocess(
    flags: Sequence[str],
    output_dir: str | Path,
    *,
    nproc: int = 1,
    entry: str = "train.py",
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
) -> TrainedRun:
    """Run train.py with `flags` into `output_dir` and wait; the run directory is `.run`.

    `env` is the whole environment (default: `launch_environment()`); with `log`, the output
    goes to that file instead of being kept; past `timeout` every process of the run prints its
    stacks and `tools.processes.Hung` is raised."""
    command = train_command([*flags, "--output-dir", str(output_dir)], nproc, entry)
    environment = env if env is not None else launch_environment()
    if log is None:
        done = run_process(command, environment, timeout)
    else:
        with log.open("w") as stream:
            done = run_process(command, environment, timeout, log=stream)
    return TrainedRun(command, done.returncode, done.stdout, done.stderr, Path(output_dir))
