"""Config validation and bad input: one-line error, exit code != 0, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.runs import REPO_ROOT, launch_env


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
