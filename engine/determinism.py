"""Determinism profiles applied to torch, read back from torch, and reported with a verdict.

Why read back: a report that copies the config says what was asked, not what ran. The flags in
determinism.json come from torch's own getters after `apply_determinism`.

Why a warnings hook: under `use_deterministic_algorithms(True, warn_only=True)` (eval profile)
torch reports each nondeterministic op as a UserWarning ("<op> does not have a deterministic
implementation ..."); Python shows a warning once per location by default, so counts would be
lost. The recorder sees every occurrence and counts it per op.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from typing import Any

import torch

from engine.config import DeterminismConfig
from seeding.hashseed import hash_seed_status

DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
_NONDETERMINISTIC = re.compile(r"^(?P<op>\S+) does not have a deterministic implementation")


def amp_dtype(settings: DeterminismConfig, device: torch.device) -> torch.dtype | None:
    """AMP only on CUDA: bf16 where the GPU supports it, else fp16 (with a GradScaler)."""
    if not settings.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def apply_determinism(settings: DeterminismConfig, device: torch.device) -> list[str]:
    """Set torch's global switches for the profile; returns notes for the report."""
    notes = []
    exact = settings.algorithms != "disabled"
    if exact and device.type == "cuda":
        current = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        if current not in DETERMINISTIC_CUBLAS:
            # cuBLAS reads it when its first handle is created; no cuBLAS call has happened yet.
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS[0]
            notes.append(
                f"CUBLAS_WORKSPACE_CONFIG was {current!r}; train.py set {DETERMINISTIC_CUBLAS[0]} "
                "before the first cuBLAS call (launch through make to have it set at start)"
            )
    torch.use_deterministic_algorithms(exact, warn_only=settings.algorithms == "warn")
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    torch.set_float32_matmul_precision("high" if settings.tf32 else "highest")
    torch.autograd.set_detect_anomaly(settings.anomaly_detection)
    return notes


def effective_flags() -> dict[str, Any]:
    """The switches as torch reports them now."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "anomaly_detection": torch.is_anomaly_enabled(),
    }


def environment_report() -> dict[str, Any]:
    return {
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "hash_seed": hash_seed_status(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch_num_threads": torch.get_num_threads(),
    }


def nondeterministic_op_in(error: BaseException) -> str | None:
    """The op's name if `error` is torch refusing a nondeterministic op (debug profile)."""
    match = _NONDETERMINISTIC.match(str(error))
    return match.group("op") if match else None


class NondeterminismRecorder:
    """Counts every nondeterministic-op warning while installed (eval profile)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._previous_showwarning = warnings.showwarning

    def install(self) -> NondeterminismRecorder:
        warnings.filterwarnings("always", message=r".*does not have a deterministic implementation")
        previous = self._previous_showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            match = _NONDETERMINISTIC.match(str(message))
            if match is None:
                previous(message, category, filename, lineno, file, line)
                return
            self.counts[match.group("op")] += 1

        warnings.showwarning = showwarning
        return self

    def uninstall(self) -> None:
        warnings.showwarning = self._previous_showwarning


def verdict(profile: str, device: torch.device, nondeterministic_ops: dict[str, int]) -> str:
    if profile == "production":
        return (
            "reproducible data stream only: order, augmentation and dropout seeds are fixed; "
            "numerics may differ between runs (cudnn.benchmark, TF32, AMP)"
        )
    if nondeterministic_ops:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(nondeterministic_ops.items()))
        return (
            f"not bitwise reproducible: nondeterministic ops ran ({ops}); data stream reproducible"
        )
    return f"bitwise reproducible on this hardware ({device.type}) and software stack"


def determinism_report(
    profile: str,
    settings: DeterminismConfig,
    device: torch.device,
    notes: list[str],
    nondeterministic_ops: dict[str, int],
    amp: torch.dtype | None,
    channels_last: bool,
) -> dict[str, Any]:
    return {
        "profile": profile,
        "requested": settings.model_dump(),
        "effective": {
            **effective_flags(),
            "amp_dtype": None if amp is None else str(amp).removeprefix("torch."),
            "channels_last": channels_last,
            "device": str(device),
        },
        "environment": environment_report(),
        "nondeterministic_ops": dict(sorted(nondeterministic_ops.items())),
        "notes": notes,
        "verdict": verdict(profile, device, nondeterministic_ops),
    }
