"""Config validation and bad input: one-line error, exit code != 0, no traceback, nothing written."""

from __future__ import annotations

import re
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
def test_a_finished_run_says_so_and_the_command_it_gives_goes_on(tmp_path: Path) -> None:
    """docs/faults.md's journey: a run stopped by trainer.max_steps, then its command again and
    `make train SEED=3 RESUME=auto`. Each says in one line which stop the run reached and the
    make command that trains on, exits 0 and leaves the run as it was; pasting that command
    continues the run, and every line counts epochs as the training log does."""
    args = f"ARGS={' '.join(TINY)} trainer.max_steps=5"
    train = ["make", "train", "SEED=3", f"OUTPUT_DIR={tmp_path}"]
    assert run_command([*train, args]).returncode == 0
    run = tmp_path / "default" / "debug" / "seed3"
    manifest = (run / "manifest.json").read_bytes()
    stop = f"done: nothing left to train: {run} reached trainer.max_steps=5 at step 5 (epoch 1/2)"
    goes_on = {}
    for again in ([*train, args], [*train, "RESUME=auto"]):
        done = run_command(again)
        assert done.returncode == 0, done.stderr[-2000:]
        (line,) = [line for line in done.stdout.splitlines() if line.startswith("done:")]
        assert line.startswith(f"{stop}; to train on: make train SEED=3"), line
        goes_on[again[-1]] = line.split("; to train on: ")[1]
        assert (run / "manifest.json").read_bytes() == manifest  # its end not written again
    assert goes_on == {
        args: f"make train SEED=3 OUTPUT_DIR={tmp_path} ARGS='{' '.join(TINY)} "
        "trainer.max_steps=null' RESUME=auto",
        "RESUME=auto": f"make train SEED=3 OUTPUT_DIR={tmp_path} ARGS='trainer.max_steps=null' "
        "RESUME=auto",
    }
    pasted = run_command(shlex.split(goes_on["RESUME=auto"]))
    assert pasted.returncode == 0, pasted.stderr[-2000:]
    assert "resuming after step 5 (epoch 1/2, 5 steps into it)" in pasted.stdout
    assert "epoch   2/2  step     24" in pasted.stdout
    assert "done: val_acc" in pasted.stdout


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
    # make's own closing line ("make: ***", or "make[1]: ***" under another make) aside
    own = [
        line
        for line in done.stderr.strip().splitlines()
        if not re.match(r"make(\[\d+\])?: \*\*\*", line)
    ]
    assert own[-1] == (
        "error: parallel.tensor=4 does not divide the world size 2: launch a multiple of 4 "
        "processes (NPROC=4)"
    ), done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "ChildFailedError" not in output and "Traceback" not in output, output[-3000:]
    assert not any(tmp_path.iterdir())
