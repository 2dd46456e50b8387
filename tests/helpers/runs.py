"""Running the real train.py (alone or under torchrun) on a tiny job and reading its outputs.

Every run goes through the product's own launcher (tools/launch.py: `train_subprocess`) and
its hang handling (tools/processes.py), in the environment the Makefile gives a run."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.checkpoint.contents import load_last
from runtime.provenance import REPO_ROOT
from runtime.rundir import RunDirectory, find_one_run
from tools.launch import REPRODUCIBLE_ENVIRONMENT, local_launcher, train_subprocess
from tools.processes import descendants, run_process, signal_all, wait_or_dump_stacks

__all__ = ["REPO_ROOT", "descendants", "signal_all", "wait_or_dump_stacks"]  # re-exported

# A job small enough for seconds on a 2-core CPU, still with BatchNorm, dropout and augmentation:
# the run's length, the synthetic data's size and the small CNN's width (each key belongs to its
# dataset's or model's own section, so a test that picks another dataset or model leaves those
# parts out).
TINY_RUN = ("data.batch_size=32", "trainer.epochs=2", "trainer.log_every_steps=1")
TINY_DATA = ("data.synthetic.train_size=384", "data.synthetic.val_size=128")
TINY_MODEL = ("model.width=8",)
TINY = (*TINY_DATA, *TINY_RUN, *TINY_MODEL)
# The tiny job with 392 samples: every epoch ends with a batch of 8, a second graph shape for a
# compiled run (training/compile.py: why static shapes), and a checkpoint at each epoch's end.
SHORT_LAST_BATCH = ("data.synthetic.train_size=392", "checkpoint.every_steps=13")


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the Makefile gives a run (hash seed, cuBLAS workspace, one thread each)."""
    env = dict(os.environ)
    env.update(
        {
            **REPRODUCIBLE_ENVIRONMENT,  # forced, not defaulted: tests must not inherit other values
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONFAULTHANDLER": "1",  # SIGABRT prints every thread's stack (see run_command)
            "PYTHONPATH": str(REPO_ROOT),  # helper scripts under tests/ import the template
        }
    )
    env.update(extra or {})
    return env


def torchrun(nproc: int, *more: str) -> list[str]:
    return [*local_launcher(max(nproc, 2)), *more]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a rendezvous the test starts itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunResult:
    process: subprocess.CompletedProcess[str]
    output_dir: Path

    @property
    def returncode(self) -> int:
        return self.process.returncode

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    @property
    def run(self) -> RunDirectory:
        return find_one_run(self.output_dir)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def manifest(self) -> dict[str, Any]:
        manifest = self.run.read_manifest()
        assert manifest is not None, f"no manifest in {self.run_dir}"
        return manifest

    def checkpoint(self) -> dict[str, Any]:
        return load_last(self.run)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.checkpoint()["model"]

    def metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.run.read_metrics(kind)

    def logged(self) -> list[dict[str, Any]]:
        """metrics.jsonl without its one timing column: what equal runs must share, row for row
        (a resumed run's rows included)."""
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in self.metrics()]


def run_train(
    output_dir: Path,
    *args: str,
    nproc: int = 1,
    tiny: bool = True,
    entry: str = "train.py",
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 300,
) -> RunResult:
    # The tiny job first, so that a test's own overrides win (the last value of a key wins).
    flags = [*(TINY if tiny else ()), *args]
    trained = train_subprocess(
        flags, output_dir, nproc=nproc, entry=entry, env=launch_env(env), timeout=timeout
    )
    process = subprocess.CompletedProcess(
        trained.command, trained.returncode, trained.stdout, trained.stderr
    )
    result = RunResult(process, output_dir)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.output[-4000:]}")
    return result


def run_command(
    command: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command in the launch environment; if it hangs, fail with the stack of every process."""
    return run_process(command, launch_env(env), timeout)


def start_command(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a command in the launch environment (wait for it with `wait_or_dump_stacks`)."""
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=launch_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_train_to_kill(output_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """train.py on one process with `args`, in a process group of its own so that a test can
    SIGKILL it with its DataLoader workers (`os.killpg`), as a lost node would; output dropped."""
    return subprocess.Popen(
        [sys.executable, "train.py", "--output-dir", str(output_dir), *args],
        cwd=REPO_ROOT,
        env=launch_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def two_node_command(node_rank: int, port: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        f"--node-rank={node_rank}",
        "--nproc_per_node=1",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        *args,
    ]


def run_two_nodes(*args: str) -> list[subprocess.CompletedProcess[str]]:
    """Two torchrun agents on 127.0.0.1, each one 'node' with one process."""
    port = free_port()
    agents = [start_command(two_node_command(rank, port, *args)) for rank in (0, 1)]
    results = []
    for agent in agents:
        stdout, stderr = wait_or_dump_stacks(agent, timeout=300)
        results.append(subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr))
    return results


def written_by_a_run(path: Path) -> bool:
    """A file of a run's results: not the writer lock's record of who holds the directory now
    (runtime/writer_lock.py), which even a refused command rewrites when it checks the lock."""
    return path.is_file() and path.name != ".writer.lock"


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs"


def weights_differ(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(first[name], second[name]) for name in first)


def copy_of_repository(destination: Path, *also: str) -> Path:
    """What a fresh clone would hold (what git tracks, and new files it does not ignore), plus
    the ignored paths `also` names, copied to `destination`: a repository a test may edit."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in [*listed, *also]:
        if name and (REPO_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, destination / name)
    return destination


def shared_directory(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every pytest-xdist worker of this session sees (each worker's own temporary
    folder sits in one per-session folder); without xdist, this session's own."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / name
    return tmp_path_factory.getbasetemp() / name


def built_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once for the whole session, whichever worker asks first; the others wait
    for it (a file lock) and reuse its result. A build that failed left no `.done` mark and is
    redone from scratch by the next one to ask."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.with_name(folder.name + ".done")
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


class ReferenceRuns:
    """Uninterrupted runs of the tiny job, each trained once per test session on first use.

    Why shared: most guarantees compare a run made under changed conditions (resumed, other
    workers, another world size, a fault survived) with the same job left alone. Neither the
    number of DataLoader workers nor the checkpoint frequency changes a single number (both
    proved below), so one uninterrupted run per (processes, profile) serves every such test,
    on every xdist worker (`built_once`). Tests read these runs and never write into them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[tuple[int, str], RunResult] = {}

    def tiny(self, nproc: int = 1, profile: str = "debug") -> RunResult:
        key = (nproc, profile)
        if key not in self._runs:
            folder = built_once(self.root / f"tiny-{nproc}-{profile}", self._train(nproc, profile))
            process = json.loads((folder / "process.json").read_text())
            self._runs[key] = RunResult(subprocess.CompletedProcess(**process), folder / "run")
        return self._runs[key]

    @staticmethod
    def _train(nproc: int, profile: str) -> Callable[[Path], None]:
        def train(folder: Path) -> None:
            run = run_train(folder / "run", "--profile", profile, nproc=nproc)
            fields = ("args", "returncode", "stdout", "stderr")
            process = {field: getattr(run.process, field) for field in fields}
            (folder / "process.json").write_text(json.dumps(process))

        return train


def benchmark_command(
    output_dir: Path, *seeds: str, options: tuple[str, ...] = (), overrides: tuple[str, ...] = ()
) -> list[str]:
    """`make benchmark` of the tiny job as a command line: tool options, then overrides."""
    return [
        sys.executable,
        "-m",
        "scripts.benchmark",
        "--seeds",
        *seeds,
        "--output-dir",
        str(output_dir),
        *options,
        "--",
        *TINY,
        *overrides,
    ]
