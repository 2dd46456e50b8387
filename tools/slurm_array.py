"""The seed runner's SLURM launcher: one job array per command, a task per (variant, seed).

Why sbatch and squeue rather than a library: submitit (what the torchvision references use)
pickles Python callables and reads job states through `sacct`, which needs SLURM's accounting
database; a minimal cluster (the local one, many small ones) has none, and our unit of work is a
command line anyway. The array's tasks are exactly the commands the local pool would run, so
the runs, their directories and the reports are the same whichever launcher ran them.

- Each task runs one train.py (torchrun inside when NPROC > 1) and writes the same log as the
  local pool. SBATCH options pass through (`SBATCH="--partition=gpu --time=4:00:00"`).
- `wait`: poll squeue and print every seed's state as it changes (queued, running, done,
  failed); without it, return at once: a later identical command does not submit the seeds
  still queued or running again (the arrays are recorded in slurm-arrays.json beside the logs)
  and reports what finished.
- A task that ended without completing its run (cancelled, out of time, a failed node) is
  reported with SLURM's state; its run directory no longer claims to be running.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import UserError
from runtime.provenance import REPO_ROOT
from runtime.rundir import RunDirectory
from tools.launch import REPRODUCIBLE_ENVIRONMENT

RECORD = "slurm-arrays.json"
POLL_S = 2.0


@dataclass(frozen=True)
class Task:
    """One array task: which run it is, where its log goes, and the command it runs."""

    key: tuple[str, int]  # (variant label, seed)
    run_dir: RunDirectory
    log: Path
    command: list[str]


REACH_TIMEOUT_S = 15.0  # sinfo retries a missing config for a minute; a user waits less


def _run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check_reachable() -> None:
    """A one-line error where no SLURM answers (no client, no configuration, no controller)."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise UserError("LAUNCHER=slurm, but no SLURM client here (sbatch, squeue not found)")
    try:
        done = _run(["sinfo", "-h", "-o", "%P"], timeout=REACH_TIMEOUT_S)
    except subprocess.TimeoutExpired as expired:
        said = expired.stderr.decode() if isinstance(expired.stderr, bytes) else expired.stderr
        first = (said or "").strip().splitlines()[:1] or ["no answer"]
        raise UserError(
            f"LAUNCHER=slurm, but no SLURM answers within {REACH_TIMEOUT_S:g} s (sinfo: "
            f"{first[0].removeprefix('sinfo: ')})"
        ) from None
    if done.returncode != 0:
        raise UserError(f"LAUNCHER=slurm, but no SLURM answers: {_last_line(done.stderr)}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


class SlurmArrays:
    """The arrays this runner submitted into one log folder, and their tasks' states."""

    def __init__(self, log_dir: Path, sbatch_options: str, nproc: int, name: str) -> None:
        self.log_dir = log_dir
        self.options = shlex.split(sbatch_options)
        self.nproc = nproc
        self.name = name
        self.record = log_dir / RECORD

    # ----------------------------------------------------------------- what is in flight
    def _arrays(self) -> list[dict[str, Any]]:
        return json.loads(self.record.read_text()) if self.record.is_file() else []

    def in_flight(self) -> dict[tuple[str, int], str]:
        """(label, seed) -> "job_task" of recorded tasks that SLURM still holds."""
        queued = self.states()
        found = {}
        for array in self._arrays():
            for index, (label, seed) in enumerate(array["tasks"]):
                task_id = f"{array['job_id']}_{index}"
                if task_id in queued:
                    found[(label, seed)] = task_id
        return found

    def states(self) -> dict[str, str]:
        """squeue's state of every task of the recorded arrays ("123_0" -> "RUNNING")."""
        jobs = [array["job_id"] for array in self._arrays()]
        if not jobs:
            return {}
        done = _run(["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%i %T"])
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            raise UserError(f"squeue failed: {_last_line(done.stderr)}")
        return dict(line.split() for line in done.stdout.splitlines() if line.strip())

    # ----------------------------------------------------------------- submitting
    def submit(self, tasks: list[Task]) -> str:
        """One array for `tasks`; returns its job id, recorded before anything else happens."""
        number = len(self._arrays())
        script = self.log_dir / f"slurm-array-{number}.sh"
        cases = "\n".join(
            f"{index}) exec {shlex.join(task.command)} > {shlex.quote(str(task.log))} 2>&1 ;;"
            for index, task in enumerate(tasks)
        )
        script.write_text(
            "#!/bin/bash\n"
            "# Written by tools/slurm_array.py: one task per (variant, seed) of a multi-seed run.\n"
            f"cd {shlex.quote(str(REPO_ROOT))}\n"
            f"export {exports(REPRODUCIBLE_ENVIRONMENT)} PYTHONUNBUFFERED=1\n"
            f'case "$SLURM_ARRAY_TASK_ID" in\n{cases}\nesac\n'
        )
        command = [
            "sbatch",
            "--parsable",
            f"--job-name={self.name}",
            f"--array=0-{len(tasks) - 1}",
            "--ntasks=1",
            f"--cpus-per-task={self.nproc}",
            "--output=/dev/null",
            *self.options,  # after ours: the user's options win
            str(script),
        ]
        done = _run(command)
        if done.returncode != 0:
            raise UserError(f"sbatch refused the job array: {_last_line(done.stderr)}")
        job_id = done.stdout.strip().split(";")[0]
        arrays = [*self._arrays(), {"job_id": job_id, "tasks": [list(t.key) for t in tasks]}]
        self.record.write_text(json.dumps(arrays, indent=2) + "\n")
        return job_id

    def ended_state(self, task_id: str) -> str | None:
        """SLURM's final state of a task that left the queue (None once SLURM forgot it)."""
        done = _run(["scontrol", "-o", "show", "job", task_id])
        for field in done.stdout.split():
            if field.startswith("JobState="):
                return field.partition("=")[2]
        return None


def run_tasks(
    arrays: SlurmArrays,
    tasks: list[Task],
    wait: bool,
    say: Callable[[str], None],
    finished: Callable[[Task, str, str | None], None],
) -> list[Task]:
    """Submit the tasks not already in flight, then (with `wait`) follow every task until it
    leaves the queue, calling `finished(task, task id, SLURM's final state)`. Returns the tasks still
    queued or running when it returns (none with `wait`)."""
    in_flight = arrays.in_flight()
    new = [task for task in tasks if task.key not in in_flight]
    task_ids = {task.key: in_flight[task.key] for task in tasks if task.key in in_flight}
    if new:
        job_id = arrays.submit(new)
        task_ids.update({task.key: f"{job_id}_{index}" for index, task in enumerate(new)})
        say(f"submitted job array {job_id}: {len(new)} task(s)")
    if in_flight:
        say(f"{len(tasks) - len(new)} run(s) already queued or running in earlier arrays")
    waiting = {task.key: task for task in tasks}
    shown: dict[tuple[str, int], str] = {}
    while waiting:
        states = arrays.states()
        for key, task in list(waiting.items()):
            state = states.get(task_ids[key])
            label = "queued" if state == "PENDING" else "running" if state else "ended"
            if shown.get(key) != label and label != "ended":
                say(f"[{_name(key)}] {label} (SLURM task {task_ids[key]})")
                shown[key] = label
            if state is None:
                finished(task, task_ids[key], arrays.ended_state(task_ids[key]))
                del waiting[key]
        if not wait:
            return list(waiting.values())
        if waiting:
            time.sleep(POLL_S)
    return []


def _name(key: tuple[str, int]) -> str:
    label, seed = key
    return f"{label} seed {seed}" if label else f"seed {seed}"


def abandoned(run_dir: RunDirectory, state: str | None, task_id: str) -> str:
    """The error of a task that ended without completing; its run stops claiming to run."""
    reason = f"SLURM task {task_id} ended {state or 'without a record'}"
    manifest = run_dir.read_manifest()
    if manifest is not None and manifest.get("status") == "running":
        manifest.update(status="failed", fault="scheduler", error=reason)
        run_dir.write_manifest(manifest)
    return reason


def exports(variables: dict[str, str]) -> str:
    """`NAME=value ...` for a shell's export line, each value quoted."""
    return " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())
