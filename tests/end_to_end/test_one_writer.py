"""One writer per run: workers die with their launcher, a second training on a live run
directory is refused, and a run killed again and again ends as if left alone (a chaos soak).

Real torchrun jobs (gloo, 2 processes), real SIGKILL and SIGTERM, real files damaged on disk.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.checkpoint.files import newest_complete
from runtime.rundir import RunDirectory
from tests.helpers.runs import (
    TINY,
    RunResult,
    assert_same_weights,
    launch_env,
    run_command,
    run_train,
)
from tools.launch import train_command
from tools.processes import descendants

pytestmark = pytest.mark.slow

# Twenty epochs of six steps at W = 2, a checkpoint every other step: room for several faults,
# and long enough that orphans left alone would still be training while a restart begins.
JOB = (*TINY, "trainer.epochs=20", "checkpoint.every_steps=2")
ORPHAN_LIMIT_S = 5.0  # an orphan must be gone this soon after its launcher


class Launched:
    """One `torchrun --nproc_per_node=2 train.py` of `job`, its output in a log file."""

    def __init__(self, output: Path, log: Path, resume: bool) -> None:
        self.flags = [*JOB, "--output-dir", str(output)]
        flags = [*self.flags, *(["--resume", "auto"] if resume else [])]
        self.log = log
        with log.open("w") as stream:
            self.launcher = subprocess.Popen(
                train_command(flags, nproc=2),
                cwd=Path(__file__).resolve().parents[2],
                env=launch_env(),
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        self.run = RunDirectory.of(output, "default", "debug", 42)

    def workers(self) -> list[int]:
        return descendants(self.launcher.pid)

    def wait_for_step(self, step: int, timeout: float = 120) -> list[int]:
        """Until this start logged `step` (the workers' PIDs then), or the launcher ended. A
        resumed run has dropped the rows after its checkpoint once it says where it runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started = f"run {self.run}" in self.log.read_text()
            rows = self.run.read_metrics("step") if started else []
            if rows and rows[-1]["step"] >= step:
                return self.workers()
            if self.launcher.poll() is not None:
                raise AssertionError(f"ended before step {step}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        raise AssertionError(f"step {step} not reached in {timeout:.0f} s")

    def finish(self, timeout: float = 300) -> int:
        return self.launcher.wait(timeout=timeout)


def wait_until_gone(pids: list[int], limit: float) -> float:
    """Seconds until every process of `pids` is gone; fails past `limit` (and kills them)."""
    started = time.monotonic()
    while any(_alive(pid) for pid in pids):
        if time.monotonic() - started > limit:
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"processes {pids} outlived their launcher by {limit:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; its parent (init) reaps it


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_train(tmp_path_factory.mktemp("alone"), *JOB[len(TINY) :], nproc=2)


def kill_launcher(job: Launched, workers: list[int]) -> str:
    job.launcher.send_signal(signal.SIGKILL)
    job.finish()
    lived = wait_until_gone(workers, ORPHAN_LIMIT_S)
    rows = job.run.metrics_file.read_text()
    time.sleep(0.5)  # nothing more is written once they are gone
    assert job.run.metrics_file.read_text() == rows
    assert not list(job.run.checkpoint_dir.glob(".*.tmp")), "an exit left a partial file"
    assert "its launcher" in job.log.read_text() and "is gone" in job.log.read_text()
    state = run_command([sys.executable, "-m", "scripts.run_state", *job.flags])
    assert state.stdout.strip() == "stale", state  # manifest 'running', nobody holds the run
    return f"launcher SIGKILL (orphans gone in {lived:.2f} s)"


def kill_one_worker(job: Launched, workers: list[int]) -> str:
    os.kill(workers[-1], signal.SIGKILL)
    assert job.finish() != 0
    wait_until_gone(workers, ORPHAN_LIMIT_S)
    return "one worker SIGKILL"


def stop_launcher(job: Launched, workers: list[int]) -> str:
    job.launcher.send_signal(signal.SIGTERM)
    job.finish()
    wait_until_gone(workers, ORPHAN_LIMIT_S)
    manifest = job.run.read_manifest() or {}
    assert manifest.get("status") == "interrupted", manifest.get("status")
    return "launcher SIGTERM (checkpoint, interrupted)"


def damage_the_newest_checkpoint(run: RunDirectory) -> Path:
    newest, _ = newest_complete(run.checkpoint_dir)
    assert newest is not None
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the checksum no longer matches
    newest.write_bytes(bytes(data))
    return newest


def test_a_run_killed_again_and_again_ends_as_if_left_alone(
    uninterrupted: RunResult, tmp_path: Path
) -> None:
    faults: list[Callable[[Launched, list[int]], str]] = [
        kill_launcher,
        kill_one_worker,
        stop_launcher,
        kill_launcher,  # and the newest checkpoint is damaged before the next start
    ]
    moments = random.Random(20261202)
    done: list[str] = []
    job = Launched(tmp_path, tmp_path / "start-0.log", resume=False)
    for number, fault in enumerate(faults):
        low = 4 + 25 * number  # the moments spread over the 120 steps
        workers = job.wait_for_step(moments.randint(low, low + 20))
        done.append(fault(job, workers))
        if number == 3:
            damaged = damage_the_newest_checkpoint(job.run)
            done.append(f"damaged {damaged.name}")
        job = Launched(tmp_path, tmp_path / f"start-{number + 1}.log", resume=True)
    assert job.finish() == 0, job.log.read_text()[-3000:]
    skipped = f"skipped incomplete or damaged checkpoint(s): {damaged.name}"
    assert skipped in (tmp_path / "start-4.log").read_text()
    stale = "its last training ended without recording it"
    assert stale in (tmp_path / "start-1.log").read_text()  # after the launcher's SIGKILL
    assert stale not in (tmp_path / "start-3.log").read_text()  # after SIGTERM: interrupted
    assert not job.workers()
    resumed = RunResult(subprocess.CompletedProcess([], 0, "", ""), tmp_path)
    assert_same_weights(uninterrupted.weights(), resumed.weights())
    assert resumed.logged() == uninterrupted.logged(), f"after {done}"  # none lost, none doubled
    print("faults:", "; ".join(done))


def test_workers_orphaned_while_starting_up_stop_too(tmp_path: Path) -> None:
    """Killed with their launcher before joining the group, workers used to wait in the c10d
    store's connect for more than 15 minutes."""
    job = Launched(tmp_path, tmp_path / "start.log", resume=False)
    deadline = time.monotonic() + 30
    while len(job.workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = job.workers()
    assert len(workers) == 2 and f"run {job.run}" not in job.log.read_text()  # still starting
    job.launcher.send_signal(signal.SIGKILL)
    job.finish()
    wait_until_gone(workers, 15.0)  # imports take a few seconds before the watch can start
    assert not (job.run.path / "config.yaml").exists()


def test_a_resume_while_orphans_would_live_is_refused_or_finds_them_gone(
    uninterrupted: RunResult, tmp_path: Path
) -> None:
    """The restart that made two writers before: right after the launcher's SIGKILL, before
    its workers could notice, `--resume auto` starts on the same run directory."""
    job = Launched(tmp_path, tmp_path / "first.log", resume=False)
    workers = job.wait_for_step(9)
    job.launcher.send_signal(signal.SIGKILL)
    job.finish()
    outcomes = []
    while True:
        again = Launched(tmp_path, tmp_path / f"again-{len(outcomes)}.log", resume=True)
        code = again.finish()
        text = again.log.read_text()
        if code == 0:
            outcomes.append("resumed")
            break
        assert "a run directory has one writer" in text, text[-3000:]
        assert any(_alive(pid) for pid in workers) or "is being written" in text
        outcomes.append("refused")
        wait_until_gone(workers, ORPHAN_LIMIT_S)
    resumed = RunResult(subprocess.CompletedProcess([], 0, "", ""), tmp_path)
    assert_same_weights(uninterrupted.weights(), resumed.weights())
    assert resumed.logged() == uninterrupted.logged()
    print("outcomes:", outcomes, json.dumps(job.run.read_manifest()["resumed_from_step"]))


def test_a_second_training_on_a_live_run_is_refused_naming_rank_0_and_the_first_goes_on(
    uninterrupted: RunResult, tmp_path: Path
) -> None:
    job = Launched(tmp_path, tmp_path / "first.log", resume=False)
    workers = job.wait_for_step(3)
    second = run_command([sys.executable, "train.py", *job.flags, "--resume", "auto"], timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    (line,) = second.stderr.strip().splitlines()
    assert "is being written by another training (host " in line, line
    holder = int(line.split("PID ")[1].split(",")[0])
    assert holder in workers  # rank 0 of the live run
    assert line.endswith("wait for it to end or stop it first: a run directory has one writer")
    assert job.finish() == 0, job.log.read_text()[-3000:]
    first = RunResult(subprocess.CompletedProcess([], 0, "", ""), tmp_path)
    assert_same_weights(uninterrupted.weights(), first.weights())
    assert first.logged() == uninterrupted.logged()
