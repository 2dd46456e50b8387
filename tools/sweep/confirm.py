"""Confirmation on held-out seeds: the best point against the base config, on seeds the sweep
never saw, through `make compare`'s own command (scripts/compare.py: its runner, its paired
statistics, its SEQUENTIAL=1), not a copy of it.

Why held-out seeds: the best of N trials scored on the tuning seeds is partly the best luck on
those seeds (the winner's curse); the same two configurations on fresh seeds measure what the
tuning found. The comparison's folder is `<sweep>/confirm/` (compare's --name), so a rerun of
the sweep reuses its runs too.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from runtime.provenance import REPO_ROOT
from runtime.rundir import read_json
from tools.launch import launch_environment
from tools.seed_runs import METRICS
from tools.sweep.objective import Sweep

CONFIRM_NAME = "confirm"


def confirm(
    sweep: Sweep, best_overrides: list[str], seeds: list[int], sequential: bool
) -> tuple[int, dict[str, Any] | None]:
    """Run the comparison; (its exit code, its compare.json or None)."""
    metrics = [sweep.space.metric, *(m for m in METRICS if m != sweep.space.metric)]
    launch = sweep.launch
    command = [
        sys.executable,
        "-m",
        "scripts.compare",
        "--a",
        "",
        "--b",
        shlex.join(best_overrides),
        "--seeds",
        *map(str, seeds),
        "--profile",
        launch.profile,
        "--config",
        sweep.config_path,
        "--output-dir",
        str(sweep.folder),
        "--name",
        CONFIRM_NAME,
        "--jobs",
        str(launch.jobs),
        "--nproc",
        str(launch.nproc),
        "--entry",
        launch.entry,
        "--launcher",
        launch.launcher,
        f"--sbatch={launch.sbatch}",
        "--metrics",
        *metrics,
        *(["--sequential", "--max-seeds", str(len(seeds))] if sequential else []),
        "--",
        *sweep.fixed,
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, env=launch_environment(), check=False)
    report = sweep.folder / CONFIRM_NAME / "compare.json"
    return done.returncode, read_json(report) if report.is_file() else None


def confirmation_folder(folder: Path) -> Path:
    return folder / CONFIRM_NAME
