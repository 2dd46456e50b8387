"""`python -m scripts.diagnose` passes on a correct job and fails on planted mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.runs import REPO_ROOT, launch_env, run_two_nodes, torchrun

pytestmark = pytest.mark.slow


def diagnose(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), cwd=REPO_ROOT, env=launch_env(), capture_output=True, text=True, timeout=180
    )


def test_single_process_passes() -> None:
    done = diagnose(sys.executable, "-m", "scripts.diagnose", "--seed", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: every stream matches the plan" in done.stdout


def test_two_processes_pass_with_a_verdict_per_stream() -> None:
    done = diagnose(*torchrun(2, "-m", "scripts.diagnose"))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        line.split()[0]: line.split()[-1]
        for line in done.stdout.splitlines()
        if line.split() and line.split()[-1] in ("ok", "MISMATCH")
    }
    assert {"init", "dropout", "host", "worker", "loader", "sampler", "augment"} <= set(rows)
    assert set(rows.values()) == {"ok"}


def test_planted_shared_dropout_fails() -> None:
    done = diagnose(*torchrun(2, "-m", "scripts.diagnose", "--plant-mistake", "shared-dropout"))
    assert done.returncode != 0
    assert any(
        line.startswith("dropout") and line.endswith("MISMATCH")
        for line in done.stdout.splitlines()
    )


def test_local_rank_seeding_is_caught_across_two_nodes() -> None:
    good = run_two_nodes("-m", "scripts.diagnose")
    assert all(result.returncode == 0 for result in good), good[0].stdout + good[0].stderr
    bad = run_two_nodes("-m", "scripts.diagnose", "--plant-mistake", "local-rank")
    assert bad[0].returncode != 0
    assert any(
        line.startswith("dropout") and line.endswith("MISMATCH")
        for line in bad[0].stdout.splitlines()
    )
