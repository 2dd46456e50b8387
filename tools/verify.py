"""Train the same job twice and compare it bitwise: `make verify SEED=42 PROFILE=debug [NPROC=2]`.

For users checking their own GPU, container or fork: it prints IDENTICAL, or the first step whose
loss differs and the first parameter tensor that differs (with its max abs difference), and exits
1 on divergence. Losses are logged every step for this (trainer.log_every_steps=1); by default
the job is cut to `--steps` optimizer steps to keep it short (0 = the whole job).

    python -m tools.verify [--nproc N] [--steps N] [--workdir DIR] [--entry train.py] -- <train.py flags>
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.checkpoints import load_last
from runtime.provenance import REPO_ROOT
from runtime.rundir import RunDirectory, find_one_run
from tools.launch import launch_environment, local_launcher


def _train(label: str, command: list[str], output_dir: Path) -> RunDirectory:
    print(f"verify: {label}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(
        [*command, "--output-dir", str(output_dir)],
        cwd=REPO_ROOT,
        env=launch_environment(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        print(tail, file=sys.stderr)
        raise UserError(f"{label} failed with exit code {done.returncode}")
    return find_one_run(output_dir)


def step_losses(run_dir: RunDirectory) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in run_dir.read_metrics("step")}


def first_loss_difference(first: dict[int, float], second: dict[int, float]) -> str | None:
    for step in sorted(set(first) | set(second)):
        if first.get(step) != second.get(step):
            return (
                f"first differing loss at step {step}: {first.get(step)!r} vs {second.get(step)!r}"
            )
    return None


def first_weight_difference(first: dict[str, Any], second: dict[str, Any]) -> str | None:
    for name in first:
        a, b = first[name], second.get(name)
        if b is None or a.shape != b.shape or a.dtype != b.dtype:
            return f"first differing tensor: {name} (shape or dtype differs)"
        if not torch.equal(a, b):
            difference = (a.double() - b.double()).abs().max().item()
            return f"first differing tensor: {name} (max abs difference {difference:.3e})"
    missing = set(second) - set(first)
    return (
        f"first differing tensor: {sorted(missing)[0]} (only in the second run)"
        if missing
        else None
    )


def compare_runs(first: RunDirectory, second: RunDirectory) -> list[str]:
    differences = []
    loss = first_loss_difference(step_losses(first), step_losses(second))
    if loss:
        differences.append(loss)
    weights = [load_last(run)["model"] for run in (first, second)]
    tensor = first_weight_difference(*weights)
    if tensor:
        differences.append(tensor)
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.verify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--nproc", type=int, default=1)
    # argparse passes a string default through `type`, so a bad VERIFY_STEPS is a one-line error.
    parser.add_argument("--steps", type=int, default=os.environ.get("VERIFY_STEPS", "60"))
    parser.add_argument("--workdir", default=None, help="keep both runs here (default: a temp dir)")
    parser.add_argument(
        "--entry", default="train.py", help="training script (default: %(default)s)"
    )
    parser.add_argument("train_flags", nargs=argparse.REMAINDER)
    arguments = parser.parse_args()
    flags = [flag for flag in arguments.train_flags if flag != "--"]
    flags += ["trainer.log_every_steps=1"] + (
        [f"trainer.max_steps={arguments.steps}"] if arguments.steps else []
    )
    command = [*local_launcher(arguments.nproc), arguments.entry, *flags]
    workdir = Path(arguments.workdir or tempfile.mkdtemp(prefix="verify-"))
    try:
        first = _train("run 1/2", command, workdir / "run1")
        second = _train("run 2/2", command, workdir / "run2")
        differences = compare_runs(first, second)
    finally:
        if arguments.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if differences:
        print("DIVERGED")
        for line in differences:
            print(f"  {line}")
        return 1
    print(
        f"IDENTICAL: per-step losses and final weights match bitwise ({arguments.nproc} process(es))"
    )
    return 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
