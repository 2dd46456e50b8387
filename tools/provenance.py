"""The git state of the code that runs, for manifest.json.

It lives with the tools because it starts a process (`git`), which the training core never does.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from engine.provenance import REPO_ROOT


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the code that ran; None where this is not a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    if commit is None:  # the container has no .git; its build records the commit instead
        commit = os.environ.get("TEMPLATE_GIT_COMMIT")
    return {"commit": commit, "dirty": None if status is None else bool(status)}
