"""Faults of a running job, planted for real: a NaN, a file size limit, signals, a stopped or
missing rank, a data file that vanishes. Each must end with one line naming the cause and where,
an exit code other than 0, the newest complete checkpoint intact, a manifest that says what
happened, and `--resume auto` continuing (bitwise where the fault did not touch the numbers)."""

from __future__ import annotations

import contextlib
import math
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from runtime.checkpoint.contents import load_checkpoint
from runtime.checkpoint.files import newest_complete
from runtime.rundir import RunDirectory
from tests.helpers.dataset_files import write_cifar10, write_image_tree
from tests.helpers.runs import (
    REPO_ROOT,
    TINY,
    TINY_MODEL,
    TINY_RUN,
    ReferenceRuns,
    RunResult,
    assert_same_weights,
    descendants,
    launch_env,
    run_command,
    run_train,
    signal_all,
    start_command,
    torchrun,
    wait_or_dump_stacks,
)

pytestmark = pytest.mark.slow

PLANTED = "tests/helpers/planted_train.py"
EVERY_2 = "checkpoint.every_steps=2"


def error_line(result: RunResult | subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line (`stopped by …` for a stop the user asked for) the run printed, by
    exactly one rank, with no worker traceback."""
    output = result.stdout + result.stderr if hasattr(result, "stdout") else result.output
    lines = [line for line in output.splitlines() if line.startswith(("error:", "stopped by "))]
    assert len(lines) == 1, output[-4000:]
    # No traceback from our code, nor torchrun's ChildFailedError after the line (the agent of
    # tools/torchrun_agent.py ends with the worker's line and exit code).
    assert (
        'train.py", line' not in output and "/runtime/" not in output and "/training/" not in output
    ), output[-4000:]
    assert "ChildFailedError" not in output, output[-4000:]
    return lines[0]


def stops(log: Path) -> list[str]:
    """The lines "rank kind step" that planted_train.py's PLANTED_FAULT_LOG collected: one per
    rank that stopped by its own decision (a rank left waiting in a collective writes none)."""
    return sorted(log.read_text().splitlines())


def checkpoint_files(run: RunDirectory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.checkpoint_dir.iterdir())}


def planted(
    tmp_path: Path, nproc: int, *args: str, tiny: tuple[str, ...] = TINY, **env: str
) -> RunResult:
    launcher = torchrun(nproc, PLANTED) if nproc > 1 else [sys.executable, PLANTED]
    command = [*launcher, "--output-dir", str(tmp_path), *tiny, *args]
    return RunResult(run_command(command, env=env), tmp_path)


# ----------------------------------------------------------------------------- non-finite loss
def test_a_nan_on_one_rank_stops_every_rank_at_that_step(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    log = tmp_path / "stops.log"
    failed = planted(
        tmp_path,
        2,
        EVERY_2,
        PLANTED_NAN_AT_STEP="5",
        PLANTED_NAN_RANK="1",
        PLANTED_FAULT_LOG=str(log),
    )
    assert failed.returncode != 0
    line = error_line(failed)
    assert "non-finite loss at step 5 (epoch 1) on rank 1" in line
    assert "checkpoints/step-00000004.pt; continue with --resume auto" in line
    assert stops(log) == ["0 non_finite_loss 5", "1 non_finite_loss 5"]  # both, by the vote
    newest, _ = newest_complete(failed.run.checkpoint_dir)
    assert newest is not None and newest.name == "step-00000004.pt"
    assert not list(failed.run.checkpoint_dir.glob("step-0000000[5-9].pt*"))
    manifest = failed.manifest()
    assert (manifest["status"], manifest["fault"], manifest["final_step"]) == (
        "failed",
        "non_finite_loss",
        5,
    )
    assert manifest["resume_from"].endswith("step-00000004.pt")
    resumed = run_train(tmp_path, EVERY_2, "--resume", "auto", nproc=2)
    assert_same_weights(references.tiny(2).weights(), resumed.weights())


def test_production_reads_the_flag_only_before_reporting_and_never_saves_after_it(
    tmp_path: Path,
) -> None:
    # production: no read at step 5; the checkpoint due at step 6 reads it first and stops.
    failed = planted(
        tmp_path,
        1,
        "--profile",
        "production",
        EVERY_2,
        "trainer.log_every_steps=4",
        PLANTED_NAN_AT_STEP="5",
    )
    assert failed.returncode == 1
    assert "non-finite loss at step 5 (epoch 1) on rank 0" in error_line(failed)
    assert failed.manifest()["final_step"] == 6  # noticed at the next read, after step 6
    newest, _ = newest_complete(failed.run.checkpoint_dir)
    assert newest is not None and newest.name == "step-00000004.pt"
    assert not list(failed.run.checkpoint_dir.glob("step-0000000[5-9].pt*"))
    logged = [r["step"] for r in failed.metrics("step")]
    assert logged == [4]  # the loss of a broken step is never logged as a number


def test_a_huge_learning_rate_breaks_the_state_first_and_no_checkpoint_holds_it(
    tmp_path: Path,
) -> None:
    """optim.lr=1e8: BatchNorm's running variance overflows while the loss is still finite.
    The run stops at the step where the state first broke; every checkpoint left is finite."""
    failed = run_train(tmp_path, "optim.lr=1e8", "checkpoint.every_steps=1", check=False)
    assert failed.returncode == 1
    line = error_line(failed)
    match = re.search(r"non-finite state \(parameters, buffers or optimizer\) at step (\d+) ", line)
    assert match is not None, line
    broke = int(match.group(1))
    logged = {r["step"]: r["loss"] for r in failed.metrics("step")}
    assert all(math.isfinite(loss) for loss in logged.values()) and max(logged) == broke - 1
    saved = sorted(p.name for p in failed.run.checkpoint_dir.glob("step-*.pt"))
    assert saved and saved[-1] == f"step-{broke - 1:08d}.pt"
    for path in failed.run.checkpoint_dir.glob("step-*.pt"):
        state = load_checkpoint(path)
        for name, tensor in [*state["model"].items()]:
            assert not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()), name
    assert failed.manifest()["fault"] == "non_finite_state"


# ----------------------------------------------------------------------------- a full disk
def test_a_write_error_while_checkpointing_keeps_the_previous_checkpoint(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    first = run_train(tmp_path, EVERY_2, "trainer.max_steps=4", nproc=2)
    before = checkpoint_files(first.run)
    limit = len(before["step-00000004.pt"]) // 2  # a checkpoint no longer fits; logs still do

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [
        *torchrun(2, PLANTED),
        "--output-dir",
        str(tmp_path),
        *TINY,
        EVERY_2,
        "trainer.max_steps=null",  # the first run stopped at 4 by its own stopping criterion
        "--resume",
        "auto",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=launch_env({"PLANTED_FAULT_LOG": str(tmp_path / "stops.log")}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_file_size,
    )
    stdout, stderr = wait_or_dump_stacks(process, 300)
    failed = RunResult(
        subprocess.CompletedProcess(command, process.returncode, stdout, stderr), tmp_path
    )
    assert failed.returncode != 0
    line = error_line(failed)
    assert "cannot write" in line and "step-00000006.pt: File too large" in line
    assert "last complete checkpoint" in line and "step-00000004.pt" in line
    # rank 1 stopped too, at the same step, told by the vote
    assert stops(tmp_path / "stops.log") == ["0 write_error 6", "1 write_error 6"]
    assert checkpoint_files(first.run) == before  # no partial file, the old ones untouched
    assert failed.manifest()["fault"] == "write_error"
    resumed = run_train(tmp_path, EVERY_2, "--resume", "auto", nproc=2)
    assert_same_weights(references.tiny(2).weights(), resumed.weights())


# ----------------------------------------------------------------------------- signals
@pytest.mark.parametrize("name", ["INT", "HUP"])  # Ctrl-C; a closing SSH session or terminal
def test_sigint_or_sighup_checkpoints_at_the_next_step_and_says_how_to_resume(
    references: ReferenceRuns, tmp_path: Path, name: str
) -> None:
    if name == "HUP" and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        pytest.skip("the suite runs under nohup: the run keeps ignoring SIGHUP, as it should")
    stopped = planted(tmp_path, 1, EVERY_2, PLANTED_SIGNAL_AT_STEP="5", PLANTED_SIGNAL=name)
    assert stopped.returncode == 128 + signal.Signals[f"SIG{name}"]
    assert f"received SIG{name}: stopping after this step with a checkpoint" in stopped.output
    line = error_line(stopped)
    assert f"stopped by SIG{name} after step 5 (epoch 1)" in line
    assert "step-00000005.pt; continue with --resume auto" in line
    assert stopped.checkpoint()["step"] == 5
    manifest = stopped.manifest()
    assert (manifest["status"], manifest["fault"]) == ("interrupted", "interrupted")
    resumed = run_train(tmp_path, EVERY_2, "--resume", "auto")
    assert_same_weights(references.tiny(1).weights(), resumed.weights())
    assert resumed.logged() == references.tiny(1).logged()  # step 5's row was logged before


def test_sigterm_to_torchrun_stops_all_ranks_at_one_step(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    # As SLURM does before a preemption: the launcher gets SIGTERM and forwards it to each rank.
    # torchrun signals each rank's whole process group: the DataLoader workers get it too.
    workers = "data.num_workers=2"
    stopped = planted(
        tmp_path, 2, EVERY_2, workers, PLANTED_SIGNAL_AT_STEP="3", PLANTED_SIGNAL_TO="launcher"
    )
    assert stopped.returncode != 0
    checkpoint = stopped.checkpoint()
    assert checkpoint["step"] == stopped.manifest()["final_step"] >= 3
    assert len(checkpoint["rng"]) == 2  # one checkpoint, written with both ranks' state
    assert f"stopped by SIGTERM after step {checkpoint['step']}" in error_line(stopped)
    resumed = run_train(tmp_path, EVERY_2, workers, "--resume", "auto", nproc=2)
    assert_same_weights(references.tiny(2).weights(), resumed.weights())


def test_a_second_signal_exits_at_once_without_a_checkpoint(tmp_path: Path) -> None:
    stopped = planted(
        tmp_path,
        1,
        EVERY_2,
        PLANTED_SIGNAL_AT_STEP="5",
        PLANTED_SIGNAL_TIMES="2",
        PLANTED_SIGNAL_INTERVAL="1.5",
    )
    assert stopped.returncode == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting now, without a checkpoint" in stopped.output
    assert stopped.checkpoint()["step"] == 4  # the one due at step 6 never came


def test_sigterm_twice_at_once_is_one_request_as_at_a_slurm_time_limit(tmp_path: Path) -> None:
    """SLURM's time limit sends SIGTERM twice, about 15 ms apart: one checkpoint, not an exit."""
    stopped = planted(
        tmp_path,
        1,
        EVERY_2,
        PLANTED_SIGNAL_AT_STEP="5",
        PLANTED_SIGNAL_TIMES="2",
        PLANTED_SIGNAL_INTERVAL="0.015",
    )
    assert stopped.returncode == 128 + signal.SIGTERM
    assert "second SIGTERM" not in stopped.output
    assert stopped.checkpoint()["step"] == 5
    assert stopped.manifest()["status"] == "interrupted"


# ----------------------------------------------------------------------------- a silent rank
def test_a_stopped_rank_is_named_and_max_restarts_recovers(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    # SIGSTOP of the last rank after step 7 on the first attempt: rank 0 waits 5 s in the vote
    # after step 7, names the rank, and torchrun restarts the group, which resumes from step 6.
    # torchrun waits 30 s for a stopped worker to honour SIGTERM before it kills it; once the
    # rank is named, the test kills it at once instead (what torchrun would do, sooner).
    named = (
        "error: the health vote after step 7: rank 1 did not arrive within 5 s "
        "(distributed.collective_timeout_s)"
    )
    command = [
        *torchrun(2, "--max-restarts=1", PLANTED),
        "--output-dir",
        str(tmp_path),
        *TINY,
        EVERY_2,
        "distributed.collective_timeout_s=5",
    ]
    process = start_command(command, {"PLANTED_SIGSTOP_AT_STEP": "7"})
    # The stderr pipe is the reader's alone: communicate() in wait_or_dump_stacks read it too,
    # and twice took the very line the reader waits for (the rank was never killed, the line lost).
    errors, process.stderr = process.stderr, None
    stderr_lines: list[str] = []

    def kill_the_stopped_rank_once_named() -> None:
        assert errors is not None
        for line in errors:
            stderr_lines.append(line)
            if line.startswith(named):
                signal_all(stopped(descendants(process.pid)), signal.SIGKILL)

    reader = threading.Thread(target=kill_the_stopped_rank_once_named)
    reader.start()
    stdout, _ = wait_or_dump_stacks(process, 300)
    reader.join()
    output = stdout + "".join(stderr_lines)
    assert process.returncode == 0, output[-4000:]
    assert named in output, output[-4000:]
    run = RunResult(subprocess.CompletedProcess(command, 0, stdout, ""), tmp_path)
    assert run.manifest()["resumed_from_step"] == 6
    assert_same_weights(references.tiny(2).weights(), run.weights())


def stopped(pids: list[int]) -> list[int]:
    """The processes among `pids` that are stopped (state T in /proc)."""
    found = []
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                found.append(pid)
    return found


def test_a_rank_that_never_joins_is_named(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    topology = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    address = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    alone = run_train(
        tmp_path, "distributed.collective_timeout_s=2", env={**topology, **address}, check=False
    )
    assert alone.returncode == 1
    line = error_line(alone)
    assert line == (
        "error: joining the process group: rank 1 did not arrive within 2 s "
        "(distributed.collective_timeout_s)"
    )
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- data files
def test_an_image_that_vanishes_mid_run_is_named_and_nothing_is_lost(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "images")
    args = (
        *TINY_RUN,
        *TINY_MODEL,
        "data.name=imagefolder",
        f"data.root={root}",
        "data.batch_size=4",
        "data.num_workers=2",
        "checkpoint.every_steps=1",
    )
    reference = run_train(tmp_path / "reference", *args, tiny=False)
    victim = root / "train" / "dog" / "3.png"
    content = victim.read_bytes()
    failed = planted(
        tmp_path / "run",
        1,
        *args,
        tiny=(),
        PLANTED_REMOVE_AT_STEP="1",
        PLANTED_REMOVE_FILE=str(victim),
    )
    assert failed.returncode != 0
    index = 8 + 3  # sorted: cat/0..7, then dog/0..7
    line = error_line(failed)
    assert f"cannot read image {victim} (train sample {index}): No such file or directory" in line
    assert "continue with --resume auto" in line
    assert failed.manifest()["fault"] == "data_file"
    newest, _ = newest_complete(failed.run.checkpoint_dir)
    assert newest is not None
    victim.write_bytes(content)
    resumed = run_train(tmp_path / "run", *args, "--resume", "auto", tiny=False)
    assert_same_weights(reference.weights(), resumed.weights())


def test_a_truncated_cifar10_file_is_named_at_the_next_start(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path / "data")
    args = (*TINY_RUN, *TINY_MODEL, "data.name=cifar10", f"data.root={tmp_path / 'data'}", EVERY_2)
    first = run_train(tmp_path / "runs", *args, "trainer.max_steps=2", tiny=False)
    before = checkpoint_files(first.run)
    victim = folder / "data_batch_2"
    victim.write_bytes(victim.read_bytes()[:1000])
    # A resume with steps left to train (one with nothing left would not read the data).
    again = run_train(
        tmp_path / "runs", *args, "trainer.max_steps=4", "--resume", "auto", check=False, tiny=False
    )
    assert again.returncode == 2
    assert again.process.stderr.startswith(
        f"error: {victim} (train samples from 40) is not a CIFAR-10 batch file"
    )
    assert len(again.process.stderr.strip().splitlines()) == 1
    assert checkpoint_files(first.run) == before
