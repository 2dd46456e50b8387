"""Config validation and bad input: one-line error, exit code != 0, no traceback, nothing written."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import REPO_ROOT, TINY, launch_env, run_command


def test_real_process_bad_seed_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "train.py", "--seed", "-1", "--output-dir", str(tmp_path / "runs")],
        cwd=REPO_ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --seed must be an integer in [0, 2**64), got '-1'"
    ]
    assert not (tmp_path / "runs").exists()


def test_make_help_lists_every_target(repo_root: Path) -> None:
    done = subprocess.run(
        ["make", "help"], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for target in ("setup", "train", "test", "verify", "diagnose", "lint"):
        assert f"  {target} " in done.stdout


@pytest.mark.slow
def test_after_make_train_the_next_command_is_make_s_and_pasting_it_works(tmp_path: Path) -> None:
    """A user who typed make is told what to type next in make's words (ARGS again: they may
    choose the run folder), and pasting it continues the run."""
    train = ["make", "train", "SEED=3", f"OUTPUT_DIR={tmp_path}", f"ARGS={' '.join(TINY)}"]
    assert run_command(train).returncode == 0
    again = run_command(train)
    assert again.returncode == 2
    suggested = f"make train SEED=3 OUTPUT_DIR={tmp_path} ARGS='{' '.join(TINY)}' RESUME=auto"
    error = next(line for line in again.stderr.splitlines() if line.startswith("error:"))
    assert error.endswith(
        f"already holds a run; continue it with {suggested}, or pick another SEED= / OUTPUT_DIR="
    ), error
    pasted = run_command(shlex.split(suggested))
    assert pasted.returncode == 0, pasted.stderr[-2000:]
    assert pasted.stdout.count("resuming at epoch") == 1


@pytest.mark.slow
def test_a_refusal_under_torchrun_ends_the_output_alone_and_names_nproc(tmp_path: Path) -> None:
    """`make train NPROC=2`: every rank refuses, and the line is the last thing the run prints
    (make's own `Error 2` follows it, as for one process): no torchrun traceback after it, the
    worker's exit code, and the process count in make's words."""
    done = run_command(
        [
            "make",
            "train",
            "CONFIG=configs/vit_tiny.yaml",
            "NPROC=2",
            f"OUTPUT_DIR={tmp_path}",
            "ARGS=parallel.tensor=4",
        ]
    )
    assert done.returncode == 2, done.stderr[-3000:]
    own = [line for line in done.stderr.strip().splitlines() if not line.startswith("make: ***")]
    assert own[-1] == (
        "error: parallel.tensor=4 does not divide the world size 2: launch a multiple of 4 "
        "processes (NPROC=4)"
    ), done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "ChildFailedError" not in output and "Traceback" not in output, output[-3000:]
    assert not any(tmp_path.iterdir())
