"""Where a run came from: library versions, the command line, the git state, a digest of the
weights. The recorder puts these into manifest.json."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or /workspace in the container): the one place the repository root is computed."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, Any]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion object, which weights_only loads refuse
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        # Read from package metadata: importing torchvision only for its version costs ~1.3 s.
        "torchvision": _installed("torchvision"),
        "albumentations": _installed("albumentations"),
        "numpy": _installed("numpy"),
    }


def machine(device: torch.device) -> dict[str, Any]:
    """The hardware that computed the run's numbers, as far as it changes them: bitwise equality
    holds for the same hardware and software, and CPU kernels differ by instruction set (the
    default job's weights differ between an AVX2 and an AVX512 machine), by the intra-op thread
    count, and on a GPU by the device's architecture."""
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(device) if cuda else None,
        "cuda_capability": ".".join(map(str, torch.cuda.get_device_capability(device)))
        if cuda
        else None,
        "platform": platform.platform(),
    }


def describe_machine(described: dict[str, Any] | None) -> str:
    """`machine()` in a few words: "Intel(R) Xeon(R) Processor, AVX512, 2 threads"."""
    if not described:
        return "machine not recorded"
    words = [str(described.get("cpu")), str(described.get("cpu_capability"))]
    words.append(f"{described.get('threads')} thread(s)")
    if described.get("cuda_device"):
        words.append(f"{described['cuda_device']} (compute {described['cuda_capability']})")
    return ", ".join(words)


def _cpu_model() -> str:
    """/proc/cpuinfo's model name where there is one (Linux on x86), else what Python knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """A digest of the weights themselves (names, dtypes, shapes, bytes), not of a file format."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def command_line() -> list[str]:
    return [sys.executable, *sys.argv]


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the code that runs. The container has no .git: its build
    records the commit in TEMPLATE_GIT_COMMIT instead (dirty unknown)."""

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
    if commit is None:
        commit = os.environ.get("TEMPLATE_GIT_COMMIT")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def slurm_job() -> dict[str, Any] | None:
    """The SLURM job this process runs in (None outside SLURM): its id, array task, node list,
    and how often it was requeued so far, against the bound train.sbatch sets."""
    environment = os.environ
    if "SLURM_JOB_ID" not in environment:
        return None

    def number(name: str) -> int | None:
        value = environment.get(name)
        return int(value) if value is not None and value.isdigit() else None

    return {
        "job_id": environment["SLURM_JOB_ID"],
        "array_job_id": environment.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": number("SLURM_ARRAY_TASK_ID"),
        "nodelist": environment.get("SLURM_JOB_NODELIST"),
        "requeues": number("SLURM_RESTART_COUNT") or 0,
        "max_requeues": number("MAX_REQUEUES"),
    }
