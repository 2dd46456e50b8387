"""Timing helpers shared by the benchmarks and the GPU check.

`run_plain_loop` starts benchmarks/plain_loop.py, the minimal PyTorch loop every speed figure
is compared with, as a process of its own (like train.py), so a command that reports speed
needs no import from the benchmarks room.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from runtime.provenance import REPO_ROOT
from tools.launch import launch_environment
from tools.processes import run_process

PLAIN_LOOP = "benchmarks.plain_loop"


def steady(samples_per_s: Sequence[float]) -> float:
    """Median over the epochs after the first (warm-up), or the only epoch there is."""
    return statistics.median(samples_per_s[1:] or samples_per_s)


def timed(step: Callable[[], None], steps: int) -> float:
    """Seconds per step, after 3 warm-up steps (synchronised on CUDA)."""
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def run_plain_loop(config: str, overrides: Sequence[str]) -> dict[str, float]:
    """The plain loop on `config` + `overrides`: steady samples/s and time to the first step."""
    done = run_process(
        [sys.executable, "-m", PLAIN_LOOP, "--config", config, *overrides],
        launch_environment({"PYTHONPATH": str(REPO_ROOT)}),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the plain loop failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "samples_per_s": steady(result["samples_per_s"]),
        "time_to_first_step_s": result["time_to_first_step_s"],
    }
