"""Determinism profiles: effective flags read back from torch, planted nondeterminism, make verify."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from configs import load_config
from tests.helpers.runs import (
    REPO_ROOT,
)
from training.determinism import apply_determinism, effective_flags

DEFAULT = REPO_ROOT / "configs" / "default.yaml"


@pytest.fixture
def restore_torch_flags() -> Iterator[None]:
    before = effective_flags()
    yield
    torch.use_deterministic_algorithms(
        before["deterministic_algorithms"], warn_only=before["deterministic_warn_only"]
    )
    torch.backends.cudnn.deterministic = before["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = before["cudnn_benchmark"]
    torch.backends.cuda.matmul.allow_tf32 = before["cuda_matmul_allow_tf32"]
    torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]
    torch.set_float32_matmul_precision(before["float32_matmul_precision"])


EXPECTED_FLAGS = {
    "debug": {
        "deterministic_algorithms": True,
        "deterministic_warn_only": False,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cuda_matmul_allow_tf32": False,
        "cudnn_allow_tf32": False,
        "float32_matmul_precision": "highest",
    },
    "eval": {
        "deterministic_algorithms": True,
        "deterministic_warn_only": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cuda_matmul_allow_tf32": False,
        "cudnn_allow_tf32": False,
        "float32_matmul_precision": "highest",
    },
    "production": {
        "deterministic_algorithms": False,
        "deterministic_warn_only": False,
        "cudnn_deterministic": False,
        "cudnn_benchmark": True,
        "cuda_matmul_allow_tf32": True,
        "cudnn_allow_tf32": True,
        "float32_matmul_precision": "high",
    },
}


@pytest.mark.parametrize("profile", sorted(EXPECTED_FLAGS))
def test_each_profile_sets_its_flags(profile: str, restore_torch_flags: None) -> None:
    config = load_config(DEFAULT, profile=profile)
    apply_determinism(config.determinism, torch.device("cpu"))
    flags = effective_flags()
    for name, value in EXPECTED_FLAGS[profile].items():
        assert flags[name] == value, name
