"""The world-size-invariant mode: the same bits on 1, 2, 4 or 8 gloo processes, resumed across
them, and on an elastic job that loses a node.

The job: 384 samples in global batches of 32 cut into micro-batches of 4 (M = 8, so W = 1, 2, 4,
8 are served), 12 steps per epoch, 2 epochs, the default model (BatchNorm and dropout).
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.provenance import state_dict_sha256
from runtime.rundir import benchmark_directory, read_json
from tests.helpers.runs import (
    REPO_ROOT,
    TINY,
    RunResult,
    descendants,
    free_port,
    launch_env,
    run_command,
    run_train,
    signal_all,
)

pytestmark = pytest.mark.slow

INVARIANT = (
    "data.global_batch_size=32",
    "trainer.micro_batch_size=4",
    "trainer.world_size_invariant=true",
)


def invariant_run(output: Path, nproc: int, *more: str, **options: Any) -> RunResult:
    return run_train(output, *INVARIANT, *more, nproc=nproc, **options)


def fingerprint(run: RunResult) -> dict[str, str]:
    """sha256 of the weights (BatchNorm buffers included) and of the optimizer state."""
    checkpoint = run.checkpoint()
    optimizer = hashlib.sha256()
    for index, state in sorted(checkpoint["optimizer"]["state"].items()):
        for name, value in sorted(state.items()):
            tensor = torch.as_tensor(value).contiguous()
            optimizer.update(f"{index}|{name}|".encode())
            optimizer.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {
        "weights": state_dict_sha256(checkpoint["model"]),
        "buffers": state_dict_sha256(
            {k: v for k, v in checkpoint["model"].items() if "running" in k or "batches" in k}
        ),
        "optimizer": optimizer.hexdigest(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One process, debug, no workers: the run every other world size must reproduce."""
    return invariant_run(tmp_path_factory.mktemp("w1"), 1)


@pytest.mark.parametrize(
    ("nproc", "profile", "workers"),
    # With the reference (1 process, debug, 0 workers) and the resume test below (8, then 2,
    # then 1 process, debug, equal to the reference row for row): 1, 2, 4 and 8 processes,
    # debug and eval, 0 and 2 workers.
    [(2, "debug", 2), (4, "eval", 0)],
)
def test_weights_buffers_optimizer_and_metrics_equal_for_1_2_4_8_processes(
    reference: RunResult, tmp_path: Path, nproc: int, profile: str, workers: int
) -> None:
    run = invariant_run(tmp_path, nproc, "--profile", profile, f"data.num_workers={workers}")
    assert fingerprint(run) == fingerprint(reference)
    assert run.manifest()["final_metrics"] == reference.manifest()["final_metrics"]
    assert run.logged() == reference.logged()
    assert run.manifest()["world_size"] == nproc
    invariance = run.manifest()["world_size_invariance"]
    assert invariance["micro_batches"] == 8 and invariance["serving_world_sizes"] == [1, 2, 4, 8]
    assert invariance["intra_op_threads"] == 1
    assert run.manifest()["determinism"]["environment"]["torch_num_threads"] == 1
    assert any("world-size invariant" in n for n in run.manifest()["determinism"]["notes"])


def test_resume_8_then_2_then_1_processes_mid_epoch_equals_uninterrupted(
    reference: RunResult, tmp_path: Path
) -> None:
    invariant_run(tmp_path, 8, "trainer.max_steps=5")  # stops in epoch 0, batch 5 of 12
    second = invariant_run(tmp_path, 2, "trainer.max_steps=17", "--resume", "auto")
    assert second.manifest()["resumed_from_step"] == 5
    last = invariant_run(tmp_path, 1, "trainer.max_steps=null", "--resume", "auto")
    assert last.manifest()["resumed_from_step"] == 17
    assert fingerprint(last) == fingerprint(reference)
    assert last.logged() == reference.logged()


def test_sigkill_at_2_processes_then_resume_auto_at_1_equals_uninterrupted(
    reference: RunResult, tmp_path: Path
) -> None:
    killed = invariant_run(
        tmp_path,
        2,
        "checkpoint.every_steps=4",
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGKILL_AT_STEP": "10"},
        check=False,
    )
    assert killed.returncode != 0
    resumed = invariant_run(tmp_path, 1, "checkpoint.every_steps=4", "--resume", "auto")
    assert resumed.manifest()["resumed_from_step"] == 8
    assert fingerprint(resumed) == fingerprint(reference)


def test_a_world_size_the_mode_cannot_serve_is_refused_naming_those_that_work(
    tmp_path: Path,
) -> None:
    refused = invariant_run(tmp_path, 3, check=False)
    assert refused.returncode != 0
    errors = [line for line in refused.process.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: trainer.world_size_invariant: 3 processes cannot share "
        "data.global_batch_size=32 in micro-batches of trainer.micro_batch_size=4 "
        "(8 micro-batches, each rank a subtree of one summation tree); world sizes that work: "
        "1, 2, 4, 8"
    ]
    assert "Traceback" not in refused.process.stdout and 'train.py", line' not in refused.output
    assert not any(tmp_path.iterdir())


def test_without_the_mode_1_and_2_processes_differ(reference: RunResult, tmp_path: Path) -> None:
    """The same global batch of 32 without the mode: the world size changes the result."""
    one = run_train(tmp_path / "one", "data.global_batch_size=32")
    two = run_train(tmp_path / "two", "data.global_batch_size=32", nproc=2)
    assert fingerprint(one)["weights"] != fingerprint(two)["weights"]
    assert fingerprint(one)["weights"] != fingerprint(reference)["weights"]


def test_a_benchmark_at_2_processes_reports_the_1_process_numbers(
    reference: RunResult, tmp_path: Path
) -> None:
    """`make benchmark NPROC=2` of the reference's seed (42, the default): its report holds the
    1-process reference's weights and metrics, so aggregates do not depend on the world size."""
    done = run_command(
        [
            sys.executable,
            "-m",
            "scripts.benchmark",
            "--seeds",
            "42",
            "--nproc",
            "2",
            "--output-dir",
            str(tmp_path),
            "--",
            *TINY,
            *INVARIANT,
        ]
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = read_json(benchmark_directory(tmp_path, "default", "eval") / "report.json")
    (seed,) = report["seeds"]
    assert seed["seed"] == 42 and seed["status"] == "completed"
    assert seed["weights_sha256"] == reference.manifest()["final_weights_sha256"]
    assert seed["final_metrics"] == reference.manifest()["final_metrics"]
    final = reference.manifest()["final_metrics"]
    assert {"val_acc", "val_loss"} <= final.keys() & report["aggregate"].keys()
    for metric in final.keys() & report["aggregate"].keys():
        assert report["aggregate"][metric]["mean"] == final[metric], metric


def elastic_agent(output: Path, port: int, node: int, log: Path) -> subprocess.Popen:
    """One torchrun agent of an elastic job of 1 to 2 'nodes' of 2 processes on loopback.

    Node 0 hosts the rendezvous store (it must outlive the other) and has address 127.0.0.1, node
    1 127.0.0.2: torchrun orders ranks by address, so rank 0 is on node 0; a restarted worker
    group resumes from the newest checkpoint by itself (TORCHELASTIC_RESTART_COUNT > 0). A step
    sleeps 0.2 s (the same numbers), so that the test can act while the job runs.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1:2",
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=elastic",
        f"--rdzv-conf=is_host={str(node == 0).lower()},last_call_timeout=3",
        f"--local-addr=127.0.0.{node + 1}",
        "--max-restarts=2",
        "--monitor-interval=0.5",
        "tests/helpers/planted_train.py",
        "--output-dir",
        str(output),
        *TINY,
        *INVARIANT,
        "checkpoint.every_steps=3",
    ]
    with log.open("w") as sink:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=launch_env({"PLANTED_SLEEP_PER_STEP": "0.2"}),
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )


def test_elastic_job_loses_a_node_and_ends_equal_to_uninterrupted(
    reference: RunResult, tmp_path: Path
) -> None:
    """torchrun --nnodes=1:2, two agents: one is killed (SIGKILL, with its workers) after the
    first checkpoint; the other restarts its workers, W = 4 becomes W = 2, and the run ends with
    the bits of the uninterrupted one-process run."""
    output, port = tmp_path / "run", free_port()
    logs = [tmp_path / "agent-0.log", tmp_path / "agent-1.log"]
    survivor = elastic_agent(output, port, node=0, log=logs[0])
    time.sleep(1.0)  # the store is up before the second agent looks for it
    lost = elastic_agent(output, port, node=1, log=logs[1])
    try:
        wait_for(lambda: any(output.glob("**/checkpoints/step-*.pt")), survivor, lost, 180)
        signal_all([*descendants(lost.pid), lost.pid], signal.SIGKILL)  # the node is gone
        lost.wait()
        survivor.wait(timeout=240)
    finally:
        signal_all([*descendants(survivor.pid), survivor.pid], signal.SIGKILL)
    log = logs[0].read_text()
    assert survivor.returncode == 0, log[-4000:]
    starts = re.findall(r"(\d+) process\(es\) on (\d+) node\(s\)", log)  # rank 0's first line
    assert starts == [("4", "2"), ("2", "1")], starts
    assert "went away" in log  # the first worker group stopped on the lost ranks, by itself
    resumed = RunResult(subprocess.CompletedProcess([], 0, log, ""), output)
    manifest = resumed.manifest()
    assert manifest["world_size"] == 2 and manifest["resumed_from_step"] >= 3
    assert fingerprint(resumed) == fingerprint(reference)
    assert resumed.logged() == reference.logged()


def wait_for(
    condition: Callable[[], bool],
    survivor: subprocess.Popen,
    other: subprocess.Popen,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if survivor.poll() is not None or other.poll() is not None:
            raise AssertionError("an agent ended before the first checkpoint")
        if time.monotonic() > deadline:
            raise AssertionError(f"no checkpoint after {timeout:.0f} s")
        time.sleep(0.2)


def test_sharded_optimizer_state_resumed_2_then_1_then_4_processes_equals_the_reference(
    reference: RunResult, tmp_path: Path
) -> None:
    """parallel.shard in this mode splits the optimizer state over the ranks (ZeRO-1): the
    weights and the optimizer state equal the unsharded single process's bit for bit, through
    sharded checkpoints (DCP directories) written at 2 processes and read at 1, then at 4."""
    shard = ("parallel.shard=true", "checkpoint.every_steps=4")
    killed = invariant_run(
        tmp_path,
        2,
        *shard,
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGKILL_AT_STEP": "10"},
        check=False,
    )
    assert killed.returncode != 0
    one = invariant_run(tmp_path, 1, *shard, "trainer.max_steps=17", "--resume", "auto")
    assert one.manifest()["resumed_from_step"] == 8
    four = invariant_run(tmp_path, 4, *shard, "trainer.max_steps=null", "--resume", "auto")
    assert four.manifest()["resumed_from_step"] == 17
    assert four.run.last_checkpoint.is_dir()  # sharded checkpoints all the way
    assert "optimizer state split over the ranks" in four.run.determinism_file.read_text()
    assert fingerprint(four) == fingerprint(reference)
    assert four.logged() == reference.logged()
