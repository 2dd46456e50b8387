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
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from foundation.section import RUNTIME, Section
from seeding.hashseed import hash_seed_status

PROFILES = ("debug", "eval", "production")


class DeterminismConfig(Section):
    """The `determinism` section; `configs/profiles/<profile>.yaml` fills it."""

    algorithms: Literal["strict", "warn", "disabled"] = Field(
        "strict",
        description="use_deterministic_algorithms: on and raising, on and recording, or off",
    )
    cudnn_benchmark: bool = Field(False, description="cuDNN picks algorithms by timing")
    tf32: bool = Field(False, description="TF32 matmuls and convolutions")
    amp: bool = Field(False, description="autocast: bf16 where supported, else fp16 (CUDA only)")
    channels_last: bool = Field(False, description="channels_last memory format (CUDA only)")
    pin_memory: bool = Field(False, description="pinned host memory for batches (CUDA only)")
    anomaly_detection: bool = Field(
        False, description="torch.autograd anomaly detection (slow)", json_schema_extra=RUNTIME
    )


# What debug and eval promise (bitwise reproducibility on the same hardware) and the settings that
# would silently break it. Asking for them in those profiles is refused, not applied with a warning.
_EXACT_PROFILE_FORBIDS = {
    "cudnn_benchmark": "picks convolution algorithms by timing, which varies between runs",
    "tf32": "rounds float32 matmuls to 10-bit mantissas",
    "amp": "changes numerics (and fp16 loss scaling depends on overflow history)",
}


def check_profile(profile: str, settings: DeterminismConfig) -> None:
    """Raise ValueError when `settings` break what `profile` promises (debug and eval are exact)."""
    if profile == "production":
        return
    wanted = "strict" if profile == "debug" else "warn"
    if settings.algorithms != wanted:
        raise ValueError(
            f"profile {profile!r} needs determinism.algorithms={wanted}, "
            f"got {settings.algorithms} (use --profile production for speed)"
        )
    for key, reason in _EXACT_PROFILE_FORBIDS.items():
        if getattr(settings, key):
            raise ValueError(
                f"profile {profile!r} cannot use determinism.{key}=true: it {reason}; "
                "use --profile production"
            )


DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
_NONDETERMINISTIC = re.compile(r"^(?P<op>\S+) does not have a deterministic implementation")


@dataclass(frozen=True)
class Precision:
    """What the profile asks of the numerics and memory layout, resolved for the device."""

    amp: torch.dtype | None  # None: float32
    channels_last: bool
    pin_memory: bool


def precision_for(settings: DeterminismConfig, device: torch.device) -> Precision:
    """AMP, channels_last and pinned memory apply on CUDA only; AMP is bf16 where the GPU
    supports it, else fp16 (with a GradScaler)."""
    cuda = device.type == "cuda"
    amp = None
    if settings.amp and cuda:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Precision(amp, settings.channels_last and cuda, settings.pin_memory and cuda)


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
    precision: Precision,
) -> dict[str, Any]:
    return {
        "profile": profile,
        "requested": settings.model_dump(),
        "effective": {
            **effective_flags(),
            "amp_dtype": None
            if precision.amp is None
            else str(precision.amp).removeprefix("torch."),
            "channels_last": precision.channels_last,
            "device": str(device),
        },
        "environment": environment_report(),
        "nondeterministic_ops": dict(sorted(nondeterministic_ops.items())),
        "notes": notes,
        "verdict": verdict(profile, device, nondeterministic_ops),
    }
