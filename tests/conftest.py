"""Shared helpers: run the real train.py (alone or under torchrun) on a tiny job and read its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# A job small enough for seconds on a 2-core CPU, still with BatchNorm, dropout and augmentation.
TINY = (
    "data.synthetic.train_size=384",
    "data.synthetic.val_size=128",
    "data.batch_size=32",
    "trainer.epochs=2",
    "trainer.log_every_steps=1",
    "model.width=8",
)


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the Makefile gives a run (hash seed, cuBLAS workspace, one thread each)."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONHASHSEED": "0",
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT),  # helper scripts under tests/ import the template
        }
    )
    env.update(extra or {})
    return env


def torchrun(nproc: int, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *more,
    ]


@dataclass
class RunResult:
    process: subprocess.CompletedProcess[str]
    output_dir: Path

    @property
    def returncode(self) -> int:
        return self.process.returncode

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    @property
    def run_dir(self) -> Path:
        (manifest,) = self.output_dir.glob("*/*/seed*/manifest.json")
        return manifest.parent

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "manifest.json").read_text())

    def weights(self) -> dict[str, torch.Tensor]:
        checkpoint = torch.load(
            self.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True
        )
        return checkpoint["model"]

    def metrics(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()
        ]


def run_train(
    output_dir: Path,
    *args: str,
    nproc: int = 1,
    tiny: bool = True,
    entry: str = "train.py",
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 300,
) -> RunResult:
    launcher = [sys.executable] if nproc == 1 else torchrun(nproc)
    # The tiny job first, so that a test's own overrides win (the last value of a key wins).
    command = [*launcher, entry, "--output-dir", str(output_dir), *(TINY if tiny else ()), *args]
    process = subprocess.run(
        command, cwd=REPO_ROOT, env=launch_env(env), capture_output=True, text=True, timeout=timeout
    )
    result = RunResult(process, output_dir)
    if check and process.returncode != 0:
        raise AssertionError(f"training failed ({process.returncode}):\n{result.output[-4000:]}")
    return result


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs"


def weights_differ(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(first[name], second[name]) for name in first)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
