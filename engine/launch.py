"""The command that starts N training processes on this machine: the interpreter, or torchrun.

One place for it, so verify, the benchmark and the tests launch runs exactly as `make train` does.
"""

from __future__ import annotations

import sys


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
