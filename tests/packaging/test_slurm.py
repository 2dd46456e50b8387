"""The cluster path for real, on a one-node SLURM on this machine (scripts/slurm/local_cluster.sh):
train.sbatch as a user submits it, preemption ending in a finished run, seeds as job arrays.

The cluster is brought up here unless it is up already (.ci/run starts it); the tests skip, with
the reason, where it cannot start (no SLURM packages, not root)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.rundir import RunDirectory, benchmark_directory, find_one_run
from tests.helpers.runs import (
    REPO_ROOT,
    TINY,
    ReferenceRuns,
    benchmark_command,
    launch_env,
    run_command,
)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

CLUSTER = REPO_ROOT / "scripts" / "slurm" / "local_cluster.sh"
CPU_NODE = ("--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2", "--time=10")


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """The environment that reaches the local cluster; it is stopped again if started here."""
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True)
    started_here = status.returncode != 0
    if started_here:
        up = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            pytest.skip(f"the local SLURM cannot start here: {up.stderr.strip()}")
    directory = os.environ.get("LOCAL_SLURM_DIR", f"/tmp/local-slurm-{os.getuid()}")
    yield {"SLURM_CONF": f"{directory}/slurm.conf"}
    if started_here:
        subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=120)


def squeue(job: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=launch_env(env)
    )
    return done.stdout.strip()


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


def submit(env: dict[str, str], log: Path, *arguments: str) -> str:
    """train.sbatch on one CPU node (no edit of the script: options and environment only)."""
    command = ["sbatch", "--parsable", *CPU_NODE, f"--output={log}", "scripts/slurm/train.sbatch"]
    done = run_command([*command, *arguments], env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def job_state(job: str, env: dict[str, str]) -> str:
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=launch_env(env)
    ).stdout
    fields = dict(field.split("=", 1) for field in shown.split() if "=" in field)
    return f"{fields.get('JobState')} {fields.get('ExitCode')}"


def test_a_two_process_job_equals_make_train_nproc_2(
    slurm: dict[str, str], references: ReferenceRuns, tmp_path: Path
) -> None:
    env = {**slurm, "SEED": "42", "PROFILE": "debug", "NPROC": "2", "OUTPUT_DIR": str(tmp_path)}
    log = tmp_path / "job.out"
    job = submit(env, log, *TINY)
    wait_until(lambda: squeue(job, env) == "", 180, "the job to finish")
    assert job_state(job, env) == "COMPLETED 0:0", log.read_text()
    manifest = find_one_run(tmp_path).read_manifest()
    assert manifest is not None and manifest["world_size"] == 2
    assert manifest["final_weights_sha256"] == references.tiny(2).manifest()["final_weights_sha256"]
    assert manifest["slurm"]["requeues"] == 0 and manifest["slurm"]["job_id"]


def test_a_job_stopped_by_slurm_requeues_itself_and_ends_as_if_uninterrupted(
    slurm: dict[str, str], references: ReferenceRuns, tmp_path: Path
) -> None:
    """SIGTERM to the job's steps (as `--signal=TERM@120` or a preemption sends it): every rank
    checkpoints at one step, the job requeues itself, the next start resumes and finishes."""
    env = {
        **slurm,
        "SEED": "42",
        "PROFILE": "debug",
        "NPROC": "2",
        "OUTPUT_DIR": str(tmp_path),
        "TRAIN_SCRIPT": "tests/helpers/planted_train.py",
        "PLANTED_SLEEP_PER_STEP": "0.3",  # slower, the same numbers
    }
    log = tmp_path / "job.out"
    job = submit(env, log, *TINY, "checkpoint.every_steps=2")
    run = RunDirectory.of(tmp_path, "default", "debug", 42)
    wait_until(lambda: any(run.checkpoint_dir.glob("step-*.pt.sha256")), 120, "a checkpoint")
    signal = run_command(["scancel", "--signal=TERM", job], env=env)
    assert signal.returncode == 0, signal.stderr
    wait_until(lambda: squeue(job, env) == "", 240, "the requeued job to finish")
    assert job_state(job, env) == "COMPLETED 0:0"
    output = log.read_text()
    assert "interrupted after a checkpoint: requeueing (1 of at most 10)" in output, output
    manifest = run.read_manifest()
    assert manifest is not None and manifest["status"] == "completed", output[-3000:]
    assert manifest["slurm"]["requeues"] == 1 and manifest["slurm"]["max_requeues"] == 10
    assert manifest["resumed_from_step"] >= 2
    assert manifest["final_weights_sha256"] == references.tiny(2).manifest()["final_weights_sha256"]


def test_seeds_as_a_job_array_give_the_local_pool_s_report(
    slurm: dict[str, str], local_benchmark: Path, tmp_path: Path
) -> None:
    options = ("--launcher", "slurm")
    first = run_command(
        benchmark_command(tmp_path, "0", "1", "2", options=(*options, "--no-wait")), env=slurm
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "submitted job array" in first.stdout
    again = run_command(
        benchmark_command(tmp_path, "0", "1", "2", options=(*options, "--no-wait")), env=slurm
    )
    assert "submitted job array" not in again.stdout  # nothing submitted twice
    assert "already queued or running" in again.stdout or "(reused)" in again.stdout
    done = run_command(benchmark_command(tmp_path, "0", "1", "2", options=options), env=slurm)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    on_slurm = json.loads(
        (benchmark_directory(tmp_path, "default", "eval") / "report.json").read_text()
    )
    local = json.loads(
        (benchmark_directory(local_benchmark, "default", "eval") / "report.json").read_text()
    )
    assert on_slurm["aggregate"] == local["aggregate"]
    assert [s["weights_sha256"] for s in on_slurm["seeds"]] == [
        s["weights_sha256"] for s in local["seeds"]
    ]
    assert on_slurm["failed_seeds"] == on_slurm["pending_seeds"] == []


def test_a_task_that_slurm_cancels_is_reported_and_its_run_does_not_claim_to_run(
    slurm: dict[str, str], tmp_path: Path
) -> None:
    """`scancel` of a running task: SIGTERM, a checkpoint, the run `interrupted`, the seed
    reported failed with SLURM's state. (A task killed outright, its manifest still saying
    `running`, is rewritten as failed: unit/test_compare_runs.py.)"""
    env = {**slurm, "PLANTED_SLEEP_PER_STEP": "1"}
    options = ("--launcher", "slurm", "--entry", "tests/helpers/planted_train.py")
    process = subprocess.Popen(
        benchmark_command(tmp_path, "5", options=options),
        cwd=REPO_ROOT,
        env=launch_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = RunDirectory.of(tmp_path, "default", "eval", 5)
    wait_until(lambda: run.checkpoint_dir.is_dir() or process.poll() is not None, 120, "the run")
    logs = benchmark_directory(tmp_path, "default", "eval") / "logs"
    job = json.loads((logs / "slurm-arrays.json").read_text())[0]["job_id"]
    subprocess.run(["scancel", f"{job}_0"], env=launch_env(env), check=True)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 1, stdout[-2000:] + stderr[-2000:]
    report = json.loads(
        (benchmark_directory(tmp_path, "default", "eval") / "report.json").read_text()
    )
    assert report["failed_seeds"] == [5]
    error = report["seeds"][0]["error"]
    assert error.startswith(f"SLURM task {job}_0 ended CANCELLED: stopped by SIGTERM"), error
    assert (run.read_manifest() or {}).get("status") == "interrupted"


@pytest.mark.parametrize(
    ("env", "options", "message"),
    [
        ({"PATH": "an empty folder"}, (), "error: LAUNCHER=slurm, but no SLURM client here"),
        ({}, ("--sbatch=--partition=nope",), "error: sbatch refused the job array: "),
    ],
)
def test_bad_slurm_input_is_one_line(
    slurm: dict[str, str],
    env: dict[str, str],
    options: tuple[str, ...],
    message: str,
    tmp_path: Path,
) -> None:
    if env.get("PATH") == "an empty folder":
        env = {"PATH": str(tmp_path)}
    done = run_command(
        benchmark_command(tmp_path, "0", options=("--launcher", "slurm", *options)),
        env={**slurm, **env},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1, (
        done.stderr
    )
    run = RunDirectory.of(tmp_path, "default", "eval", 0)
    assert run.read_manifest() is None
