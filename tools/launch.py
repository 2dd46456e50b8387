"""The command that starts N training processes on this machine: the interpreter, or torchrun.

One place for it, so verify, the benchmarks and the tests launch runs exactly as `make train` does.
"""

from __future__ import annotations

import os
import sys

# What the Makefile exports for every run: the hash seed (set inside train.py it would be too
# late), cuBLAS's deterministic workspace (it must be set before the first cuBLAS call), and no
# update check by albumentations (it asks PyPI on import: no network at run time).
REPRODUCIBLE_ENVIRONMENT = {
    "PYTHONHASHSEED": "0",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}


def launch_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child run: the variables above unless the caller set
    them already (make does), unbuffered output, then `extra`."""
    env = {**REPRODUCIBLE_ENVIRONMENT, **os.environ, "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def local_launcher(nproc: int) -> list[str]:
    """`python` for one process; `python -m torch.distributed.run --standalone` for several."""
    if nproc <= 1:
        return [sys.executable]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
    ]
